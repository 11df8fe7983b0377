"""mlx-hands and WiLoR-mini's PyTorch model on the CPU, timed in alternating rounds, one worker process each.

    python benchmarks/cpu_side_by_side.py --reference /path/to/WiLoR-mini --rounds 6 --calls 2
    python benchmarks/cpu_side_by_side.py --workers mlx mlx:no-cpu-math --rounds 6      (A/B of one switch)
    python benchmarks/cpu_side_by_side.py --workers mlx-route:2 mlx-detect --rounds 4   (1280x720 route, 2 hands)

Every worker builds its model once (random weights, float32), warms up, then waits; the parent asks each in
turn for `--calls` timed calls, so that drift of a shared machine hits every worker alike, and nothing of the
idle workers runs meanwhile (a pause lets OpenMP/OpenBLAS threads go to sleep first; --wait-quiet also waits
for the other processes of a shared machine to go quiet). The timed unit is that
of `mlx-hands bench`: host uint8 crop(s) in, every output on the host (model stage, b = --batch); or one
1280x720 frame with N planted hands -> Hand records (route: detector, crops, model, post-processing); or
the detector alone on that frame.

The machine may be shared: every call also records the CPU time that *other* processes used meanwhile
(/proc/stat minus this worker's own), in cores. The table gives the median and min of all calls, the
median of the "quiet" calls, those during which others used less than --quiet cores, and the worker's own CPU
time per call (all its threads; spinning BLAS/OpenMP threads count).

Workers: mlx, torch (needs --reference; torch.set_num_threads(--torch-threads)), mlx-route:N, mlx-detect.
Switches after a colon, comma-separated: no-cpu-math (MLX's own erf/exp/attention), blas-no-spin (OPENBLAS_THREAD_TIMEOUT=4), compile (mx.compile the forward, as on GPUs), e.g. mlx:no-cpu-math or
mlx-route:2,no-cpu-math.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLK = os.sysconf("SC_CLK_TCK")
MARK = "@@cpu_side_by_side "  # worker -> parent lines; anything else a library prints passes through


def read_reply(proc) -> object:
    for line in proc.stdout:
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
        sys.stdout.write(line)
    raise RuntimeError(f"worker {proc.args[-1]} exited with {proc.wait()}")


def busy_ticks() -> int:
    """CPU time of the whole machine, all cores, in clock ticks (user + nice + system + irq + softirq + steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


def others_cores(seconds: float = 0.5) -> float:
    """Cores that other processes kept busy over the next `seconds` (the caller sleeping meanwhile)."""
    b0, o0 = busy_ticks(), own_ticks()
    time.sleep(seconds)
    return max(((busy_ticks() - b0) - (own_ticks() - o0)) / CLK / seconds, 0.0)


def own_ticks() -> int:
    with open("/proc/self/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]) + int(v[12])  # utime, stime of every thread of this process


# ---------------------------------------------------------------- worker side


def build(kind: str, flags: set[str], args):
    """-> (fn() that does one timed unit and returns None, or the route's stage timings; description)."""
    if kind == "torch":
        import torch

        torch.set_num_threads(args.torch_threads)
        from mlx_hands import bench
        from mlx_hands.config import WiLoRConfig
        from side_by_side import torch_stage  # the one WiLoR-mini glue (scripts/reference_torch.py)

        run = torch_stage(args.reference, WiLoRConfig(), "float32", "cpu", "eager")
        crops = bench.make_crops(args.batch)
        return (lambda: run(crops) and None), f"torch {torch.__version__}, {torch.get_num_threads()} threads"

    from mlx_hands.blas import use_system_blas

    if "blas-no-spin" in flags:  # OpenBLAS's idle threads sleep at once instead of spinning ~0.1 s
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"
    blas = use_system_blas()
    import mlx.core as mx

    from mlx_hands import bench, synthetic

    mx.set_default_device(mx.cpu)

    def configure(model):
        model.compile = "compile" in flags
        if "no-cpu-math" in flags:
            for _, m in model.named_modules():
                if hasattr(m, "cpu_math"):
                    m.cpu_math = False

    desc = f"mlx {mx.__version__}, BLAS {blas}, switches {sorted(flags) or '-'}"
    if kind == "mlx":
        model = synthetic.random_model(precision="float32")
        configure(model)
        run = bench.mlx_model_stage(model)
        crops = bench.make_crops(args.batch)
        return (lambda: run(crops) and None), desc
    if kind in ("mlx-route", "mlx-detect"):
        model = synthetic.random_model(precision="float32")
        det = synthetic.random_detector("float32")
        configure(model)
        configure(det)
        pipe = bench.route_pipeline(model, det, args.hands)
        frame = bench.make_frame()
        if kind == "mlx-detect":
            return (lambda: pipe.detect(frame) and None), desc
        return (lambda: (pipe(frame), pipe.last_timings)[1]), desc
    raise ValueError(f"unknown worker kind {kind!r}")


def worker(spec: str, args) -> None:
    kind, _, rest = spec.partition(":")
    flags = {f for f in rest.split(",") if f}
    args.hands = 2
    if kind == "mlx-route":
        hands = [f for f in flags if f.isdigit()]
        args.hands = int(hands[0]) if hands else 2
        flags -= set(hands)
    t0 = time.perf_counter()
    fn, desc = build(kind, flags, args)
    first = time.perf_counter()
    fn()
    first = time.perf_counter() - first
    for _ in range(args.warmup):
        fn()
    print(MARK + json.dumps({"ready": desc, "build_s": time.perf_counter() - t0, "first_call_s": first}), flush=True)
    for line in sys.stdin:
        n = int(line)
        out = []
        for _ in range(n):
            b0, o0, t = busy_ticks(), own_ticks(), time.perf_counter()
            extra = fn()
            dt = time.perf_counter() - t
            own = own_ticks() - o0
            foreign = ((busy_ticks() - b0) - own) / CLK / dt
            rec = {"s": dt, "cpu_s": own / CLK, "others_cores": max(foreign, 0.0)}
            if isinstance(extra, dict):  # the route's stage split
                rec["stages_ms"] = {k: round(v * 1e3, 2) for k, v in extra.items()}
            out.append(rec)
        print(MARK + json.dumps(out), flush=True)


# ---------------------------------------------------------------- parent side


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", nargs="+", default=None, help="default: mlx, and torch when --reference is given")
    p.add_argument("--reference", type=Path, help="a checkout of warmshao/WiLoR-mini")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--calls", type=int, default=2, help="timed calls per worker per round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--pause", type=float, default=1.0, help="seconds between workers' turns")
    p.add_argument("--quiet", type=float, default=0.1, help="a call is quiet when others used fewer cores")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each turn, wait up to this long for others to use fewer than --quiet cores")
    p.add_argument("--json", type=Path)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args)
    specs = args.workers or (["mlx", "torch"] if args.reference else ["mlx"])
    if any(s.split(":")[0] == "torch" for s in specs) and not args.reference:
        p.error("a torch worker needs --reference")

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    base = [sys.executable, __file__, "--warmup", str(args.warmup), "--batch", str(args.batch),
            "--torch-threads", str(args.torch_threads)] + (["--reference", str(args.reference)] if args.reference else [])
    procs, info = {}, {}
    for s in specs:  # started one after another: building a model is itself CPU-heavy
        procs[s] = subprocess.Popen(base + ["--worker", s], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    env=env)
        info[s] = read_reply(procs[s])
        print(f"{s}: {info[s]['ready']}; built in {info[s]['build_s']:.1f} s, first call {info[s]['first_call_s']:.2f} s",
              flush=True)
    calls = {s: [] for s in specs}
    try:
        for r in range(args.rounds):
            for s in specs:
                time.sleep(args.pause)
                deadline = time.monotonic() + args.wait_quiet
                while time.monotonic() < deadline and others_cores() >= args.quiet:
                    pass
                procs[s].stdin.write(f"{args.calls}\n")
                procs[s].stdin.flush()
                got = read_reply(procs[s])
                calls[s] += got
                print(f"round {r} {s}: " + ", ".join(f"{c['s']:.3f} s (others {c['others_cores']:.2f})" for c in got),
                      flush=True)
    finally:
        for pr in procs.values():
            pr.stdin.close()
            pr.wait()

    import numpy as np

    print("\n| worker | median s | min s | quiet median s (n) | others' cores, median | own CPU s, median |")
    print("|---|---|---|---|---|---|")
    for s in specs:
        t = np.array([c["s"] for c in calls[s]])
        o = np.array([c["others_cores"] for c in calls[s]])
        q = t[o < args.quiet]
        qm = f"{np.median(q):.3f} ({len(q)})" if len(q) else "- (0)"
        cpu = np.median([c["cpu_s"] for c in calls[s]])
        print(f"| {s} | {np.median(t):.3f} | {t.min():.3f} | {qm} | {np.median(o):.2f} | {cpu:.2f} |")
        stages = [c["stages_ms"] for c in calls[s] if "stages_ms" in c]
        if stages:
            print("|   stages, median ms | " + ", ".join(
                f"{k} {np.median([st[k] for st in stages]):.0f}" for k in stages[0]) + " | | | | |")
    if args.json:
        args.json.write_text(json.dumps({"workers": info, "calls": calls, "args": {k: str(v) for k, v in
                                                                                     vars(args).items()}}, indent=1))


if __name__ == "__main__":
    main()
