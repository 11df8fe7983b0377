"""mlx-hands and WiLoR-mini's PyTorch model on the same inputs, in one run: the model stage (host uint8 crops ->
every output on the host) for each precision and batch size, PyTorch eager and torch.compile side by side.

    python benchmarks/side_by_side.py --reference /path/to/WiLoR-mini -b 1 8 64 -p bfloat16 float32
    python benchmarks/side_by_side.py --reference /path/to/WiLoR-mini --torch-modes eager compile --floors --json out.json

torch.compile uses mode="reduce-overhead" (CUDA graphs on a GPU). WiLoR-mini's ViT indexes with a Python list
(`pred_hand_pose[:, [0]]`), which a CUDA graph cannot capture; the script replaces it, in this process only, by
the equivalent slice `[:, 0:1]` (its source is read from the checkout; nothing of it is stored here).
--rounds N alternates mlx and torch N times per measurement (each round a fresh timing) to expose drift.
Random weights (the time does not depend on their values). Needs torch, smplx==0.1.28, roma.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shlex
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "benchmarks")]

from mlx_hands.blas import use_system_blas  # noqa: E402

use_system_blas()  # before MLX is imported
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from mlx_hands import bench, synthetic  # noqa: E402
from mlx_hands.blas import check_cpu_blas  # noqa: E402
from mlx_hands.config import DTYPES, WiLoRConfig  # noqa: E402


def slice_not_index(vit_module) -> bool:
    """Replace `[:, [0]]` by `[:, 0:1]` in WiLoR-mini's ViT.forward_features (same values; capturable)."""
    src = textwrap.dedent(inspect.getsource(vit_module.ViT.forward_features))
    if "[:, [0]]" not in src:
        return False
    ns: dict = {}
    exec(compile(src.replace("[:, [0]]", "[:, 0:1]"), vit_module.__file__, "exec"), vit_module.__dict__, ns)
    vit_module.ViT.forward_features = ns["forward_features"]
    return True


def torch_stage(reference: Path, config: WiLoRConfig, precision: str, device: str, mode: str):
    """run(crops uint8 (B, 256, 256, 3)) -> dict of numpy outputs with WiLoR-mini's model (eager or compiled)."""
    import torch
    from reference_torch import build_reference

    means = {"pose": np.tile([1.0, 0, 0, 0, 1.0, 0], config.vit.num_hand_joints + 1).astype(np.float32),
             "shape": np.zeros(config.vit.num_betas, np.float32), "cam": np.array([0.9, 0.0, 0.0], np.float32)}
    model = build_reference(reference, config, synthetic.random_mano(config.mano), means, randomized=False,
                            stats_dtype=precision)
    dtype = getattr(torch, precision)
    model = model.to(device=device, dtype=dtype)
    model.IMAGE_MEAN, model.IMAGE_STD = model.IMAGE_MEAN.to(device), model.IMAGE_STD.to(device)
    if mode == "compile":
        slice_not_index(sys.modules["wilor_mini.models.vit"])
        model = torch.compile(model, mode="reduce-overhead")

    @torch.inference_mode()
    def run(crops: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(crops).to(device).to(dtype)
        out = model(x)
        return {k: v.float().cpu().numpy() for k, v in out.items() if torch.is_tensor(v)}

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", type=Path, required=True, help="a checkout of warmshao/WiLoR-mini")
    p.add_argument("-b", "--batch", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("-p", "--precision", nargs="+", default=["bfloat16"], choices=DTYPES)
    p.add_argument("--torch-modes", nargs="+", default=["eager", "compile"], choices=["eager", "compile"])
    p.add_argument("--torch-device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--max-seconds", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=1, help="alternate mlx and torch this many times")
    p.add_argument("--size", choices=["full", "tiny"], default="full")
    p.add_argument("--floors", action="store_true", help="also print each mlx row's distance from the roofline")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    device = args.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = synthetic.TINY if args.size == "tiny" else WiLoRConfig()
    env = bench.environment()
    env["torch"] = torch.__version__
    env["torch_device"] = device
    if mx.default_device().type == mx.DeviceType.cpu:
        env["cpu_gemm_gflops"] = f"{check_cpu_blas():.1f}"
        env["torch_threads"] = str(torch.get_num_threads())
    print("command: " + shlex.join(["python", *sys.argv]))
    print("; ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    timing = dict(warmup=args.warmup, iters=args.iters, max_seconds=args.max_seconds)
    results, floors = [], []
    ceilings = None
    if args.floors:
        import roofline

        ceilings = {"bandwidth_gbs": roofline.measure_bandwidth(), "matmul_tflops": roofline.measure_matmul()}
    for precision in args.precision:
        model = synthetic.random_model(config, precision)
        runs = {"mlx": bench.mlx_model_stage(model)}
        for mode in args.torch_modes:
            runs[f"torch-{mode}"] = torch_stage(args.reference, config, precision, device, mode)
        for b in args.batch:
            for r in range(args.rounds):
                for impl, run in runs.items():
                    res = bench.bench_model_stage(run, b, impl=impl, precision=precision, **timing,
                                                  note=f"round {r + 1}" if args.rounds > 1 else "")
                    results.append(res)
                    print(bench.format_table([res]).splitlines()[-1], flush=True)
                    if ceilings and impl == "mlx":
                        f = roofline.floors(config, model, ceilings["bandwidth_gbs"], ceilings["matmul_tflops"], b)
                        floors.append({"precision": precision, "batch": b, **f, "p50": res.stats["p50"]})
        del model, runs
    print()
    print(bench.format_table(results))
    for f in floors:
        print(f"floor {f['precision']} b={f['batch']}: weights/bandwidth {f['bytes_ms']:.2f} ms, FLOPs/rate "
              f"{f['flops_ms']:.2f} ms, p50 {f['p50']:.2f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"argv": sys.argv, "environment": env, "ceilings": ceilings, "floors": floors,
                                         "results": [r.to_dict() for r in results]}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
