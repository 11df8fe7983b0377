"""A/B of the speed switches on one model, same process and inputs: each variant's model-stage timings and
its largest output difference from the first variant.

    python benchmarks/ab.py -p bfloat16 -b 1 64
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
from mlx_hands import bench, synthetic  # noqa: E402
from mlx_hands.models import kernels  # noqa: E402

VARIANTS = {  # name -> (model.compile, backbone.fuse_add_norm, deconv as GEMM, kernels turned off)
    "default": (None, None, None, ()),
    "no fused add+norm": (None, False, None, ()),
    "no gelu kernel": (None, None, None, ("gelu",)),
    "no sample_max kernel": (None, None, None, ("sample_max",)),
    "no mano kernel": (None, None, None, ("mano",)),
    "no rotation kernels": (None, None, None, ("rotations",)),
    "no custom kernels": (None, None, None, ("all",)),
    "deconv as GEMM": (None, None, True, ()),
    "eager (no compile)": (False, None, None, ()),
    "eager, no fused add+norm": (False, False, None, ()),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-p", "--precision", nargs="+", default=["bfloat16"])
    p.add_argument("-b", "--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("-v", "--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--max-seconds", type=float, default=4.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    print("; ".join(f"{k} {v}" for k, v in bench.environment().items()))
    results, diffs = [], {}
    for precision in args.precision:
        model = synthetic.random_model(precision=precision)
        run = bench.mlx_model_stage(model)
        for b in args.batch:
            crops = synthetic.make_crops(b, 123)
            first = None
            for name in args.variants:
                model.compile, model.backbone.fuse_add_norm, model.refine_net.deconv.deconv_gemm, off = VARIANTS[name]
                with kernels.disabled(*off):
                    out = run(crops)
                    first = first or out
                    d = max(float(np.abs(out[k] - first[k]).max()) for k in ("vertices", "keypoints_3d", "cam"))
                    r = bench.bench_model_stage(run, b, impl=name, precision=precision, iters=args.iters,
                                                max_seconds=args.max_seconds, note=f"max |diff| vs first {d:.2e}")
                results.append(r)
                diffs[f"{precision} b={b} {name}"] = d
                print(bench.format_table([r]).splitlines()[-1], f"diff {d:.2e}", flush=True)
        del model
    print(bench.format_table(results))
    if args.json:
        args.json.write_text(json.dumps({"results": [r.to_dict() for r in results], "diffs": diffs}, indent=1))


if __name__ == "__main__":
    main()
