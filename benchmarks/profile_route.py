"""Per-stage wall time and per-kernel GPU time of the full route (1280x720 frame, N planted hands), through
CUPTI (torch.profiler as its front end), as profile_model.py does for the model stage.

    python benchmarks/profile_route.py -p bfloat16 --hands 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlx_hands.blas import use_system_blas  # noqa: E402

use_system_blas()
import numpy as np  # noqa: E402

import mlx.core as mx  # noqa: E402

from mlx_hands import bench, synthetic  # noqa: E402
from profile_model import group_of  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-p", "--precision", default="bfloat16")
    p.add_argument("--hands", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args()
    model = synthetic.random_model(precision=args.precision)
    det = synthetic.random_detector(args.precision)
    pipe = bench.route_pipeline(model, det, args.hands)
    frame = synthetic.make_frame()
    for _ in range(5):
        pipe(frame)
    stages = []
    for _ in range(20):
        pipe(frame)
        stages.append(pipe.last_timings)
    print("stages (median ms): " + ", ".join(f"{k} {np.median([s[k] for s in stages]) * 1e3:.2f}" for k in stages[0]))
    x = mx.array(np.random.default_rng(0).random((1, 384, 640, 3), np.float32))
    mx.eval(x)

    def det_only():
        mx.eval(det(x))

    for _ in range(3):
        det_only()
    ts = []
    for _ in range(20):
        t = time.perf_counter()
        det_only()
        ts.append(time.perf_counter() - t)
    print(f"detector network alone, device-resident input: {np.median(ts) * 1e3:.2f} ms")

    import json
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(args.iters):
            with record_function(f"iter{i}"):
                pipe(frame)
        torch.cuda.synchronize()
    prof.export_chrome_trace("/tmp/route_trace.json")
    ev = json.loads(Path("/tmp/route_trace.json").read_text())["traceEvents"]
    ks = [e for e in ev if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    tot, groups, names = 0.0, {}, {}
    for k in ks:
        tot += k["dur"]
        g = group_of(k["name"])
        groups[g] = groups.get(g, 0) + k["dur"]
        names[k["name"][:100]] = names.get(k["name"][:100], 0) + k["dur"]
    n = args.iters
    print(f"GPU busy per frame {tot / n / 1e3:.2f} ms, {len(ks) / n:.0f} kernels per frame")
    print("by group (us/frame): " + ", ".join(f"{g} {v / n:.0f}" for g, v in sorted(groups.items(), key=lambda kv: -kv[1])))
    for name, d in sorted(names.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {d / n:8.1f} us/frame  {name}")


if __name__ == "__main__":
    main()
