"""MLX and the PyTorch reference timed in turns, several rounds, same process and inputs, so that machine
drift hits both alike; prints each round and the median of the rounds' p50s.

    python benchmarks/interleaved.py --reference /path/to/WiLoR-mini -p bfloat16 float16 -b 32 64 --rounds 3
    (--transfer-modes staged prefetch plain: also mlx with each host->GPU input mode, mlx_hands/models/transfer.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mlx_hands.blas import use_system_blas  # noqa: E402

use_system_blas()
import numpy as np  # noqa: E402

from mlx_hands import bench  # noqa: E402
from mlx_hands.models import transfer  # noqa: E402


def _with_mode(run, mode):
    def wrapped(crops):
        before, transfer.MODE = transfer.MODE, mode
        try:
            return run(crops)
        finally:
            transfer.MODE = before

    return wrapped


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", type=Path, required=True)
    p.add_argument("-p", "--precision", nargs="+", default=["bfloat16", "float16"])
    p.add_argument("-b", "--batch", type=int, nargs="+", default=[32, 64])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--transfer-modes", nargs="*", default=[], choices=transfer.MODES,
                   help="also time mlx with each of these host->GPU input modes (mlx_hands/models/transfer.py)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    print("; ".join(f"{k} {v}" for k, v in bench.environment().items()))
    p50s = defaultdict(list)
    for precision in args.precision:
        impls = {"mlx": bench.mlx_model_stage(bench.random_model(precision=precision)),
                 "torch": bench.torch_reference_stage(args.reference, precision)[0]}
        for mode in args.transfer_modes:
            impls[f"mlx-{mode}"] = _with_mode(impls["mlx"], mode)
        for r in range(args.rounds):
            for b in args.batch:
                for name, run in impls.items():
                    res = bench.bench_model_stage(run, b, impl=name, precision=precision, warmup=3,
                                                  iters=args.iters, max_seconds=3, peak_memory=False)
                    p50s[(precision, b, name)].append(res.stats["p50"])
                    print(f"round {r} {precision} b={b} {name}: p50 {res.stats['p50']:.2f} ms  "
                          f"p99 {res.stats['p99']:.2f} ms", flush=True)
        del impls
    extra = "".join(f" mlx, {m} |" for m in args.transfer_modes)
    print(f"\n| precision | batch | mlx p50 (median of rounds) | torch p50 | torch / mlx |{extra}")
    print("|---|---|---|---|---|" + "---|" * len(args.transfer_modes))
    for precision in args.precision:
        for b in args.batch:
            m, t = np.median(p50s[(precision, b, "mlx")]), np.median(p50s[(precision, b, "torch")])
            cells = "".join(f" {np.median(p50s[(precision, b, f'mlx-{mode}')]):.2f} |" for mode in args.transfer_modes)
            print(f"| {precision} | {b} | {m:.2f} | {t:.2f} | {t / m:.2f} |{cells}")
    if args.json:
        args.json.write_text(json.dumps({f"{k[0]} b={k[1]} {k[2]}": v for k, v in p50s.items()}, indent=1))


if __name__ == "__main__":
    main()
