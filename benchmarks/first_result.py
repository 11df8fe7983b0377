"""A first run on a GPU as a user meets it: an empty mlx-hands cache, the models loaded as the loader does
(mlx_hands.kernel_cache.install: kernel cache + background compile), then 1280x720 frames through the pipeline
(planted detector, so that every stage works) with a changing hand count, until both networks run compiled.
Then: new hand counts on the warm cache, a second process on the warm cache, and steady-state A/Bs in one process
(the plain model(crops) path against the pipeline's; the detector compiled or not).

    python benchmarks/first_result.py --cache-root /tmp/fresh --json out/first.json

Random weights. Every time is wall time around a call that ends with its results on the host.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HAND_SCHEDULE = (1, 1, 2, 1, 3, 2, 4, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache-root", type=Path, required=True, help="MLX_HANDS_CACHE for this run (emptied unless --warm)")
    p.add_argument("--precision", default="bfloat16")
    p.add_argument("--seconds", type=float, default=150, help="give up waiting for the compiled forwards after this")
    p.add_argument("--warm", action="store_true", help="the second process: first result on the warm cache")
    p.add_argument("--ab-iters", type=int, default=30)
    p.add_argument("--size", choices=["full", "tiny"], default="full", help="tiny: a smoke test of the script")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    t_start = time.perf_counter()
    if not args.warm:
        shutil.rmtree(args.cache_root, ignore_errors=True)
    os.environ["MLX_HANDS_CACHE"] = str(args.cache_root)
    os.environ.pop("MLX_PTX_CACHE_DIR", None)

    import mlx.core as mx
    import numpy as np

    from mlx_hands import bench, kernel_cache, settings, synthetic
    from mlx_hands.config import WiLoRConfig
    from mlx_hands.pipeline.runner import HandPosePipeline
    from mlx_hands.transfer import from_device, to_device

    def since() -> float:
        return round(time.perf_counter() - t_start, 3)

    log = {"argv": sys.argv, "environment": bench.environment(), "events": []}

    def event(**kw):
        kw["t"] = since()
        log["events"].append(kw)
        print(json.dumps(kw), flush=True)

    t = time.perf_counter()
    tiny = args.size == "tiny"
    model = synthetic.random_model(synthetic.TINY if tiny else WiLoRConfig(), args.precision)
    det = synthetic.random_detector(args.precision, synthetic.TINY_DETECTOR if tiny else None)
    gate = kernel_cache.install(model, det)
    event(step="built models, gate installed", seconds=round(time.perf_counter() - t, 3),
          kernel_cache=os.environ.get("MLX_PTX_CACHE_DIR"))
    pipes = {}

    def pipe(n):
        if n not in pipes:
            pipes[n] = HandPosePipeline(model, synthetic.PlantedDetector(det, synthetic.hand_boxes(n)))
        return pipes[n]

    frames = [synthetic.make_frame(i) for i in range(3)]

    def frame(i, n):
        t = time.perf_counter()
        hands = pipe(n)(frames[i % 3])
        dt = time.perf_counter() - t
        assert len(hands) == n, (len(hands), n)
        return dt

    # until both run compiled (or time is up), with the hand count changing
    i, switched = 0, {}
    folder = settings.kernel_cache_dir()
    while True:
        n = HAND_SCHEDULE[i % len(HAND_SCHEDULE)]
        before = kernel_cache.kernel_files(folder) if len(switched) < 2 and folder.is_dir() else None
        dt = frame(i, n)
        state = {"wilor": bool(model._compiled._fns), "detector": bool(det._compiled._fns)}
        for k, v in state.items():
            if v and k not in switched:
                switched[k] = i
        if i < 3 or dt > 0.1 or len(log["events"]) < 3 or i in switched.values():
            # kernels this frame compiled itself (not found in the cache the background job filled)
            new = sorted(kernel_cache.kernel_files(folder) - before) if before is not None else []
            event(step="frame", i=i, hands=n, ms=round(dt * 1e3, 2), **state, new_kernels=new)
        log.setdefault("frames", []).append([since(), n, round(dt * 1e3, 2), state["wilor"], state["detector"]])
        i += 1
        if len(switched) == 2 and i > max(switched.values()) + 20:
            break
        if since() > args.seconds:
            event(step="gave up waiting", switched=switched)
            break
        time.sleep(0.005)
    if gate is not None and gate.process is not None:
        gate.process.wait(timeout=60)
        logs = sorted((settings.kernel_cache_dir() / "mlx-hands" / "warm").glob("*.log"))
        event(step="background job", returncode=gate.process.returncode,
              log=[q.read_text()[-2000:] for q in logs])
    after = [f[2] for f in log["frames"] if f[3] and f[4]]
    event(step="frames after the switch", n=len(after), max_ms=max(after) if after else None,
          p50_ms=float(np.median(after)) if after else None)
    # new hand counts on the warm cache
    for n in (5, 6, 8, 12, 16, 7):
        event(step="new hand count", hands=n, first_ms=round(frame(0, n) * 1e3, 2),
              second_ms=round(frame(1, n) * 1e3, 2))
    ptx = sorted(settings.kernel_cache_dir().rglob("*.ptx"))
    cubins = sorted(settings.kernel_cache_dir().rglob("*.cubin"))
    event(step="cache", ptx=len(ptx), cubins=len(cubins), names=[q.name[:50] for q in ptx])

    if not args.warm:
        cmd = [sys.executable, __file__, "--cache-root", str(args.cache_root), "--warm", "--precision", args.precision,
               "--seconds", "30", "--size", args.size]
        if args.json:
            cmd += ["--json", str(args.json.with_name(args.json.stem + "_warm.json"))]
        t = time.perf_counter()
        subprocess.run(cmd, check=False)
        event(step="second process (warm cache), whole run", seconds=round(time.perf_counter() - t, 2))

        # steady state, one process: the plain model(crops) path against the pipeline's
        stage = bench.mlx_model_stage(model)

        def np_to_numpy(c):
            return model(c).to_numpy()

        def np_per_field(c):
            out = model(c)
            return {f.name: np.array(getattr(out, f.name)) for f in fields(out)}

        def mx_per_field(c):
            out = model(mx.array(c))
            return {f.name: np.array(getattr(out, f.name)) for f in fields(out)}

        paths = {"pipeline (to_device + from_device)": stage, "model(np).to_numpy()": np_to_numpy,
                 "model(np) + np.array per field": np_per_field, "model(mx.array(np)) + np.array per field": mx_per_field}
        ab = []
        for b in (1, 64):
            for rnd in range(2):
                for name, fn in paths.items():
                    r = bench.bench_model_stage(fn, b, impl=name, precision=args.precision, warmup=3,
                                                iters=args.ab_iters, max_seconds=4, peak_memory=False,
                                                note=f"round {rnd + 1}")
                    ab.append(r.to_dict())
                    print(bench.format_table([r]).splitlines()[-1], flush=True)
        # the route, 2 hands: detector compiled (now the default on GPUs) against eager
        for rnd in range(2):
            for label, compiled in (("detector compiled", None), ("detector eager", False)):
                det.compile = compiled
                r = bench.bench_route(pipe(2), 2, impl=f"route, {label}", precision=args.precision, warmup=3,
                                      iters=args.ab_iters, max_seconds=4, note=f"round {rnd + 1}")
                ab.append(r.to_dict())
                print(bench.format_table([r]).splitlines()[-1], flush=True)
        det.compile = None
        log["ab"] = ab
        x = to_device(np.zeros((1, 384, 640, 3), np.uint8))
        for label, compiled in (("compiled", None), ("eager", False)):
            det.compile = compiled
            ms = bench.median_ms(lambda: from_device({"o": det(x)}), iters=30, warmup=3)
            event(step=f"detector network alone, {label}", p50_ms=round(ms, 3))
        det.compile = None
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(log, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
