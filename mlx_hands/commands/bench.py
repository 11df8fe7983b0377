"""mlx-hands bench: time the model stage and the full route on the current MLX device (random weights),
optionally beside WiLoR-mini's PyTorch model on the same inputs."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

SIZES = {
    "full": {},
    "tiny": {"vit": {"dim": 64, "depth": 2, "num_heads": 4}, "refine_net": {"feat_dim": 64}},
}
TINY_DETECTOR = {"width": 0.25, "depth": 0.33, "max_channels": 64}


def add_parser(sub, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help=help_text, description=(
        "Model stage: uint8 crops on the host -> every output on the host. Route: a 1280x720 frame with N hands "
        "-> detect, crop, model, post-process. Warm-up, then many timed calls; p50/p90/p95/p99/min per batch "
        "size and precision, on MLX's default device. Random weights."))
    p.add_argument("--stage", choices=["model", "route", "all"], default="model")
    p.add_argument("-b", "--batch", type=int, nargs="+", default=[1, 8, 32], help="crops per model call")
    p.add_argument("--hands", type=int, nargs="+", default=[1, 2], help="hands per frame for the route")
    p.add_argument("-p", "--precision", nargs="+", default=["float32", "float16", "bfloat16"],
                   choices=["float32", "float16", "bfloat16"])
    p.add_argument("-q", "--q-bits", type=int, nargs="*", default=None, choices=[4, 8],
                   help="also time quantized variants (bfloat16 + mlx_hands.quantize); bare -q means 8 and 4")
    p.add_argument("--q-group-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=50, help="timed calls per measurement (at most)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--max-seconds", type=float, default=30.0, help="stop a measurement's timed calls after this")
    p.add_argument("--eager", action="store_true", help="do not mx.compile the forward (as the first port)")
    p.add_argument("--size", choices=sorted(SIZES), default="full", help="tiny: a 2-block toy model (smoke tests)")
    p.add_argument("--reference", type=Path, metavar="WILOR_MINI",
                   help="a checkout of warmshao/WiLoR-mini: time its PyTorch model too (needs torch, smplx, roma)")
    p.add_argument("--reference-precision", nargs="+", default=["float32", "float16"],
                   choices=["float32", "float16", "bfloat16"])
    p.add_argument("--reference-device", default=None, help="torch device (default cuda if available, else cpu)")
    p.add_argument("--floors", action="store_true",
                   help="measure memory bandwidth and matrix rate, print each measurement's distance from the floors")
    p.add_argument("--json", type=Path, help="write every timing and the environment here")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..blas import use_system_blas

    use_system_blas()  # before mlx is imported (the CLI may have done it already)
    import mlx.core as mx

    from .. import bench
    from ..blas import check_cpu_blas
    from ..config import DetectorConfig, WiLoRConfig

    for name in ("batch", "hands"):
        if any(v < 1 for v in getattr(args, name)):
            raise ValueError(f"--{name} values must be >= 1, got {getattr(args, name)}")
    if args.iters < 1 or args.warmup < 0:
        raise ValueError("--iters must be >= 1 and --warmup >= 0")
    if args.reference is not None and not args.reference.is_dir():
        raise FileNotFoundError(f"--reference {args.reference}: no such folder (a WiLoR-mini checkout)")
    q_bits = [8, 4] if args.q_bits == [] else (args.q_bits or [])
    if q_bits and not bench.quantization_available():
        print("note: mlx_hands.quantize is not available; skipping -q", file=sys.stderr)
        q_bits = []

    config = WiLoRConfig.from_dict(SIZES[args.size])
    det_config = DetectorConfig.from_dict(TINY_DETECTOR if args.size == "tiny" else None)
    env = bench.environment()
    if mx.default_device().type == mx.DeviceType.cpu:
        env["cpu_gemm_gflops"] = f"{check_cpu_blas():.1f}"
    print("command: " + shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    print("; ".join(f"{k} {v}" for k, v in env.items()), flush=True)

    timing = dict(warmup=args.warmup, iters=args.iters, max_seconds=args.max_seconds)
    impl = "mlx-eager" if args.eager else "mlx"
    variants = [(p, None) for p in args.precision] + [("bfloat16", b) for b in q_bits]
    results, floors = [], []
    ceilings = None
    if args.floors:
        gpu = mx.default_device().type == mx.DeviceType.gpu
        ceilings = {"bandwidth_gbs": bench.measure_bandwidth(), "matmul_tflops": bench.measure_matmul(),
                    "matmul_dtype": "bfloat16" if gpu else "float32"}
        print(f"measured: memory bandwidth {ceilings['bandwidth_gbs']:.1f} GB/s, {ceilings['matmul_dtype']} "
              f"matrix rate {ceilings['matmul_tflops'] * 1e3:.0f} GFLOP/s", flush=True)

    for precision, bits in variants:
        label = f"q{bits}" if bits else precision
        model = bench.random_model(config, precision, bits=bits, group_size=args.q_group_size)
        model.compile = False if args.eager else None
        if args.stage in ("model", "all"):
            run_fn = bench.mlx_model_stage(model)
            for b in args.batch:
                r = bench.bench_model_stage(run_fn, b, impl=impl, precision=label, **timing)
                results.append(r)
                print(bench.format_table([r]).splitlines()[-1], flush=True)
                if ceilings:
                    floors.append(_floor_row(bench, config, model, r, ceilings))
        if args.stage in ("route", "all"):
            detector = bench.random_detector(precision, det_config)
            for n in args.hands:
                r = bench.bench_route(bench.route_pipeline(model, detector, n), n, impl=impl, precision=label, **timing)
                results.append(r)
                print(bench.format_table([r]).splitlines()[-1], flush=True)
        del model

    if args.reference is not None and args.stage in ("model", "all"):
        for precision in args.reference_precision:
            run_fn, device = bench.torch_reference_stage(args.reference, precision, args.reference_device, config)
            for b in args.batch:
                r = bench.bench_model_stage(run_fn, b, impl="torch", precision=precision, device=f"torch {device}",
                                            **timing)
                results.append(r)
                print(bench.format_table([r]).splitlines()[-1], flush=True)
            del run_fn
        env["torch"] = sys.modules["torch"].__version__

    print()
    print(bench.format_table(results))
    if floors:
        print()
        print(f"| precision | batch | weights / bandwidth ms | FLOPs / {ceilings['matmul_dtype']} rate ms | p50 ms "
              "| p50 / larger floor |")
        print("|---|---|---|---|---|---|")
        for f in floors:
            print(f"| {f['precision']} | {f['batch']} | {f['bytes_ms']:.2f} | {f['flops_ms']:.2f} | {f['p50']:.2f} "
                  f"| {f['ratio']:.1f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"argv": sys.argv, "environment": env, "ceilings": ceilings,
                                         "model_cost_flops": bench.model_cost(config), "floors": floors,
                                         "results": [r.to_dict() for r in results]}, indent=1))
        print(f"wrote {args.json}")
    return 0


def _floor_row(bench, config, model, r, ceilings) -> dict:
    f = bench.floors(config, model, ceilings["bandwidth_gbs"], ceilings["matmul_tflops"], r.batch)
    p50 = r.stats["p50"]
    return {"precision": r.precision, "batch": r.batch, **f, "p50": p50, "ratio": p50 / max(f.values()),
            "weight_bytes": bench.weight_bytes(model)}
