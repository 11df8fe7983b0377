"""mlx-hands bench: time the model stage and the full route on the current MLX device (random weights).

Side by side with WiLoR-mini's PyTorch model (eager and torch.compile): `python benchmarks/side_by_side.py`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import mlx.core as mx

from .. import bench, synthetic
from ..blas import check_cpu_blas
from ..config import DTYPES, WiLoRConfig

# On a GPU: every precision at a few batch sizes. On a CPU (a crop takes seconds there, and half precision
# has no fast path): float32, one crop, a few calls, about a minute.
GPU_DEFAULTS = {"batch": [1, 8, 32], "precision": list(DTYPES), "iters": 50, "warmup": 5, "max_seconds": 30.0}
CPU_DEFAULTS = {"batch": [1], "precision": ["float32"], "iters": 5, "warmup": 1, "max_seconds": 30.0}


def add_parser(sub, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help=help_text, description=(
        "Model stage: uint8 crops on the host -> every output on the host. Route: a 1280x720 frame with N hands "
        "-> detect, crop, model, post-process. Warm-up, then many timed calls; p50/p90/p95/p99/min per batch "
        "size and precision, on MLX's default device. Random weights. Defaults: on a GPU b = 1, 8, 32 in every "
        "precision; on a CPU float32 b = 1, 5 calls (about a minute). "
        "PyTorch side by side: python benchmarks/side_by_side.py --reference WILOR_MINI."))
    p.add_argument("--stage", choices=["model", "route", "all"], default="model")
    p.add_argument("-b", "--batch", type=int, nargs="+", default=None, help="crops per model call")
    p.add_argument("--hands", type=int, nargs="+", default=[1, 2], help="hands per frame for the route")
    p.add_argument("-p", "--precision", nargs="+", default=None, choices=DTYPES)
    p.add_argument("-q", "--q-bits", type=int, nargs="*", default=None, choices=[4, 8],
                   help="also time quantized variants (bfloat16 + mlx_hands.quant); bare -q means 8 and 4")
    p.add_argument("--q-group-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=None, help="timed calls per measurement (at most)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None, help="stop a measurement's timed calls after this")
    p.add_argument("--eager", action="store_true", help="do not mx.compile the forward (as the first port)")
    p.add_argument("--size", choices=["full", "tiny"], default="full", help="tiny: a 2-block toy model (smoke tests)")
    p.add_argument("--json", type=Path, help="write every timing and the environment here")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    defaults = GPU_DEFAULTS if mx.default_device().type == mx.DeviceType.gpu else CPU_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("batch", "hands"):
        if any(v < 1 for v in getattr(args, name)):
            raise ValueError(f"--{name} values must be >= 1, got {getattr(args, name)}")
    if args.iters < 1 or args.warmup < 0:
        raise ValueError("--iters must be >= 1 and --warmup >= 0")
    q_bits = [8, 4] if args.q_bits == [] else (args.q_bits or [])

    config = synthetic.TINY if args.size == "tiny" else WiLoRConfig()
    det_config = synthetic.TINY_DETECTOR if args.size == "tiny" else None
    env = bench.environment()
    if mx.default_device().type == mx.DeviceType.cpu:
        env["cpu_gemm_gflops"] = f"{check_cpu_blas():.1f}"
    print("command: " + shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    print("; ".join(f"{k} {v}" for k, v in env.items()), flush=True)

    timing = dict(warmup=args.warmup, iters=args.iters, max_seconds=args.max_seconds)
    impl = "mlx-eager" if args.eager else "mlx"
    variants = [(p, None) for p in args.precision] + [("bfloat16", b) for b in q_bits]
    results = []
    for precision, bits in variants:
        label = f"q{bits}" if bits else precision
        model = synthetic.random_model(config, precision, bits=bits, group_size=args.q_group_size)
        model.compile = False if args.eager else None
        if args.stage in ("model", "all"):
            run_fn = bench.mlx_model_stage(model)
            for b in args.batch:
                r = bench.bench_model_stage(run_fn, b, impl=impl, precision=label, **timing)
                results.append(r)
                print(bench.format_table([r]).splitlines()[-1], flush=True)
        if args.stage in ("route", "all"):
            detector = synthetic.random_detector(precision, det_config)
            for n in args.hands:
                r = bench.bench_route(bench.route_pipeline(model, detector, n), n, impl=impl, precision=label, **timing)
                results.append(r)
                print(bench.format_table([r]).splitlines()[-1], flush=True)
        del model

    print()
    print(bench.format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"argv": sys.argv, "environment": env,
                                         "results": [r.to_dict() for r in results]}, indent=1))
        print(f"wrote {args.json}")
    return 0
