"""Time another MLX port of WiLoR-mini (lyonsno/wilor-mlx, the port this project started from) with the same
harness and inputs as `mlx-hands bench`, so both MLX ports sit in one table. Its code is fetched by the user
and passed by path; nothing of it is vendored.

    python benchmarks/seed_port.py --port /path/to/wilor-mlx -b 1 8 32 -p float32 float16 bfloat16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mlx_hands.blas import use_system_blas  # noqa: E402

use_system_blas()  # the CPU wheel's BLAS is slow; must precede the first mlx import
import mlx.core as mx  # noqa: E402
from mlx_hands import bench, synthetic  # noqa: E402
from mlx_hands.models import mx_dtype  # noqa: E402


def seed_port_stage(port: Path, precision: str, seed: int = 0):
    """run(crops uint8 (B, 256, 256, 3)) -> every output on the host, for the other port's WiLoR, random weights."""
    src = port / "src"
    if not (src / "wilor_mlx" / "model.py").is_file():
        raise FileNotFoundError(f"--port {port}: expected a wilor-mlx checkout (src/wilor_mlx/model.py)")
    sys.path.insert(0, str(src))
    from wilor_mlx.model import WiLoR

    mx.random.seed(seed)
    model = WiLoR()
    arrays = synthetic.random_mano(seed=seed)
    mano = model.mano
    for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights"):
        setattr(mano, k, mx.array(arrays[k]))
    mano.parents = mx.array(arrays["parents"])
    mano.extra_joints_idxs = mx.array([744, 320, 443, 554, 671])
    vit = model.backbone
    vit.init_hand_pose = mx.array(np.tile([1.0, 0, 0, 0, 1.0, 0], 16)[None].astype(np.float32))
    vit.init_cam = mx.array([[0.9, 0.0, 0.0]])
    for m in (model.backbone, model.refine_net):
        m.eval()
        m.set_dtype(mx_dtype(precision))
        mx.eval(m.parameters())

    def run(crops: np.ndarray) -> dict[str, np.ndarray]:
        out = {k: v for k, v in model(mx.array(crops)).items() if isinstance(v, mx.array) and k != "faces"}
        mx.eval(out)
        return {k: np.array(v.astype(mx.float32)) for k, v in out.items()}

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=Path, required=True)
    p.add_argument("-b", "--batch", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("-p", "--precision", nargs="+", default=["float32", "float16", "bfloat16"])
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    print("; ".join(f"{k} {v}" for k, v in bench.environment().items()))
    results = []
    for precision in args.precision:
        run = seed_port_stage(args.port, precision)
        for b in args.batch:
            r = bench.bench_model_stage(run, b, impl="wilor-mlx", precision=precision, warmup=args.warmup,
                                        iters=args.iters, max_seconds=args.max_seconds)
            results.append(r)
            print(bench.format_table([r]).splitlines()[-1], flush=True)
    print(bench.format_table(results))
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in results], indent=1))


if __name__ == "__main__":
    main()
