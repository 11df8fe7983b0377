"""Where the model stage's time goes on a CUDA GPU: stage timings, then per-kernel device time.

MLX has no kernel profiler of its own on CUDA, but CUPTI records every kernel the process runs, MLX's
included (CUDA-graph nodes too); torch.profiler is used here only as a CUPTI front end.

    python benchmarks/profile_model.py -p bfloat16 -b 1 32 [--eager] [--trace-dir out/]

Prints, per (precision, batch): wall time of the model stage, of the forward without host transfers,
of the ViT backbone alone and of building the lazy graph; then GPU busy time per call, kernels per call
and the kernels that take the most time, grouped by name.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mlx_hands.blas import use_system_blas  # noqa: E402

use_system_blas()  # the CPU wheel's BLAS is slow; must precede the first mlx import
import mlx.core as mx  # noqa: E402
from mlx_hands import bench, synthetic  # noqa: E402

GROUPS = [  # (group, regex on the kernel name), first match wins
    ("gemm", r"gemm|sm90_|sm80_|cutlass|xmma|cublas|gemv|nvjet"),
    ("attention", r"fmha|flash|sdpa|cudnn|attention|softmax"),
    ("conv", r"conv|implicit|winograd|fft"),
    ("layer_norm", r"layer_?norm|LayerNorm"),
    ("fused (compiled)", r"^Compiled|compiled|fused"),
    ("copy", r"copy|Copy|memcpy|transpose"),
    ("gather/scatter", r"gather|scatter|take|index"),
    ("reduce", r"reduce|Reduce|arg_"),
    ("elementwise", r"binary|unary|ternary|Binary|Unary|Ternary|elementwise"),
]


def group_of(name: str) -> str:
    for g, pat in GROUPS:
        if re.search(pat, name):
            return g
    return "other"


def wall(fn, iters=20, warmup=3) -> float:
    return bench.median_ms(fn, iters=iters, warmup=warmup)


def stage_times(model, batch: int) -> dict[str, float]:
    crops = synthetic.make_crops(batch)
    x = mx.array(crops)
    mx.eval(x)
    run = bench.mlx_model_stage(model)
    c = model.config
    h, w = c.vit.image_size
    xin = mx.random.normal((batch, h, w, 3)).astype(model.dtype)
    from mlx_hands.models.compiled import compile_enabled

    if compile_enabled(model.compile, model.training):
        backbone = mx.compile(lambda t: model.backbone(t).features, inputs=model)
    else:
        backbone = lambda t: model.backbone(t).features  # noqa: E731

    def forward_only():
        out = model(x)
        mx.eval(out.vertices, out.keypoints_3d, out.cam, out.betas, out.global_orient, out.hand_pose)

    def build_only():
        model(x)

    return {
        "model stage (host in/out)": wall(lambda: run(crops)),
        "forward, device only": wall(forward_only),
        "ViT backbone only": wall(lambda: mx.eval(backbone(xin))),
        "graph build (host, no eval)": wall(build_only),
    }


def kernel_profile(model, batch: int, iters: int, trace_path: Path | None):
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    crops = synthetic.make_crops(batch)
    run = bench.mlx_model_stage(model)
    for _ in range(3):
        run(crops)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(iters):
            with record_function(f"iter{i}"):
                run(crops)
        torch.cuda.synchronize()
    tmp = Path(trace_path or "/tmp/mlx_profile_trace.json")
    prof.export_chrome_trace(str(tmp))
    events = json.loads(tmp.read_text())["traceEvents"]
    if trace_path:
        with gzip.open(str(trace_path) + ".gz", "wt") as f:
            json.dump(events, f)
        tmp.unlink()
    iters_ev = sorted([e for e in events if e.get("name", "").startswith("iter") and e.get("ph") == "X"
                       and e.get("cat") in ("user_annotation", "cpu_op")], key=lambda e: e["ts"])
    kernels = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    by_name = defaultdict(lambda: [0, 0.0])
    busy, count, order = [], [], []
    for it in iters_ev:
        t0, t1 = it["ts"], it["ts"] + it["dur"]
        ks = [k for k in kernels if t0 <= k["ts"] < t1]
        busy.append(sum(k["dur"] for k in ks))
        count.append(len(ks))
        order = [(k["name"][:100], k["dur"], k.get("args", {}).get("grid"), k.get("args", {}).get("block"),
                  k["ts"] - t0) for k in sorted(ks, key=lambda k: k["ts"])]  # the last call's kernels, start (us)
        for k in ks:
            by_name[k["name"]][0] += 1
            by_name[k["name"]][1] += k["dur"]
    n = max(len(iters_ev), 1)
    walls = [it["dur"] for it in iters_ev]
    groups = defaultdict(float)
    for name, (c, d) in by_name.items():
        groups[group_of(name)] += d / n
    top = sorted(by_name.items(), key=lambda kv: -kv[1][1])
    return {
        "wall_us": float(np.median(walls)) if walls else float("nan"),
        "busy_us": float(np.median(busy)) if busy else float("nan"),
        "kernels_per_call": float(np.median(count)) if count else 0,
        "groups_us": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "top": [(name[:120], c / n, d / n, d / c) for name, (c, d) in top[:40]],
        "kernels_seen": len(kernels),
        "order": order,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-p", "--precision", nargs="+", default=["bfloat16"])
    p.add_argument("-b", "--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--eager", action="store_true")
    p.add_argument("--no-kernels", action="store_true", help="stage timings only (no torch needed)")
    p.add_argument("--trace-dir", type=Path, help="write the chrome traces (gzipped) here")
    p.add_argument("--json", type=Path)
    p.add_argument("--tiny", action="store_true", help="a 2-block toy model (to check the script)")
    args = p.parse_args()
    from mlx_hands.config import WiLoRConfig

    config = WiLoRConfig.from_dict({"vit": {"dim": 64, "depth": 2, "num_heads": 4}, "refine_net": {"feat_dim": 64}}
                                   if args.tiny else None)
    print("; ".join(f"{k} {v}" for k, v in bench.environment().items()))
    report = {}
    for precision in args.precision:
        model = synthetic.random_model(config, precision)
        model.compile = False if args.eager else None
        for b in args.batch:
            key = f"{precision} b={b}{' eager' if args.eager else ''}"
            st = stage_times(model, b)
            print(f"\n== {key}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in st.items()), flush=True)
            report[key] = {"stages_ms": st}
            if args.no_kernels:
                continue
            trace = args.trace_dir / f"trace_{precision}_b{b}.json" if args.trace_dir else None
            if trace:
                trace.parent.mkdir(parents=True, exist_ok=True)
            kp = kernel_profile(model, b, args.iters, trace)
            report[key]["kernels"] = kp
            print(f"   per call: wall {kp['wall_us'] / 1e3:.2f} ms, GPU busy {kp['busy_us'] / 1e3:.2f} ms, "
                  f"{kp['kernels_per_call']:.0f} kernels (CUPTI saw {kp['kernels_seen']} in all)")
            print("   by group (us/call): " + ", ".join(f"{g} {v:.0f}" for g, v in kp["groups_us"].items()))
            for name, c, d, avg in kp["top"][:25]:
                print(f"   {d:9.1f} us/call  {c:5.1f}x  {avg:8.1f} us  {name}")
        del model
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
