"""Where a cold start goes on MLX's CUDA backend: a timeline of first calls (eager and compiled, per batch size, the
detector) on an empty kernel cache, the files MLX writes into it, a second process on the warm cache, and the
model stage by the plain `model(crops)` path against the pipeline's.

    python benchmarks/cold_start.py --cache /tmp/fresh-ptx --json out/cold.json

The cache folder is emptied first and handed to MLX as MLX_PTX_CACHE_DIR (read at its first JIT compile). Random
weights. Every step's seconds are wall time around a call that ends with its outputs on the host.
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


def ptx_files(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.ptx")) if cache.exists() else []


class Timeline:
    def __init__(self, cache: Path):
        self.cache, self.events, self.seen = cache, [], set()

    def step(self, label: str, fn):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        files = ptx_files(self.cache)
        new = [p.name[:60] for p in files if p not in self.seen]
        self.seen.update(files)
        self.events.append({"step": label, "seconds": round(dt, 4), "ptx_files": len(files), "new_ptx": len(new),
                            "new_names": new[:40]})
        print(f"{label:42s} {dt:9.3f} s  ptx files {len(files):4d} (+{len(new)})", flush=True)
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, required=True, help="kernel cache folder (emptied unless --warm)")
    p.add_argument("--precision", default="bfloat16")
    p.add_argument("--size", choices=["full", "tiny"], default="full")
    p.add_argument("--warm", action="store_true", help="second process: keep the cache, time first calls only")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    p.add_argument("--no-compile", action="store_true", help="skip the compiled steps (CPU smoke test)")
    p.add_argument("--ab-iters", type=int, default=20)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if not args.warm:
        shutil.rmtree(args.cache, ignore_errors=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    os.environ["MLX_PTX_CACHE_DIR"] = str(args.cache)

    import mlx.core as mx
    import numpy as np

    from mlx_hands import bench, synthetic
    from mlx_hands.config import WiLoRConfig
    from mlx_hands.models import kernels
    from mlx_hands.transfer import from_device, to_device

    tl = Timeline(args.cache)
    config = synthetic.TINY if args.size == "tiny" else WiLoRConfig()
    det_config = synthetic.TINY_DETECTOR if args.size == "tiny" else None
    model = tl.step("build model (random weights)", lambda: synthetic.random_model(config, args.precision))
    det = tl.step("build detector", lambda: synthetic.random_detector(args.precision, det_config))
    stage = bench.mlx_model_stage(model)
    crops = {b: synthetic.make_crops(b, b) for b in (1, 2, 3, 4, 64)}
    letterboxed = np.random.default_rng(0).integers(0, 256, (1, 384, 640, 3), dtype=np.uint8)

    def transfer():
        x = to_device(model.input_window(crops[1]))
        return from_device({"a": x.astype(mx.float32)[:, :4].reshape(-1), "b": x.astype(mx.float32)[:, 4:8].reshape(-1)})

    tl.step("transfer kernels (staged in + out)", transfer)
    if not args.warm:
        model.compile = False
        with kernels.disabled("all"):
            tl.step("eager b=1, no custom kernels, first", lambda: stage(crops[1]))
            tl.step("eager b=1, no custom kernels, second", lambda: stage(crops[1]))
    model.compile = False
    tl.step("eager b=1 first", lambda: stage(crops[1]))
    tl.step("eager b=1 second", lambda: stage(crops[1]))
    tl.step("eager b=2 first", lambda: stage(crops[2]))
    tl.step("eager b=2 second", lambda: stage(crops[2]))
    det.compile = False
    tl.step("detector eager first", lambda: from_device({"o": det(to_device(letterboxed))}))
    tl.step("detector eager second", lambda: from_device({"o": det(to_device(letterboxed))}))
    if not args.no_compile:
        model.compile = True
        for b in args.batches:
            tl.step(f"compiled b={b} first", lambda b=b: stage(crops[b]))
            tl.step(f"compiled b={b} second", lambda b=b: stage(crops[b]))
        det.compile = True
        tl.step("detector compiled first", lambda: from_device({"o": det(to_device(letterboxed))}))
        tl.step("detector compiled second", lambda: from_device({"o": det(to_device(letterboxed))}))
    if not args.warm:
        q = mx.random.normal((5, 16, 193, 80)).astype(mx.bfloat16)
        tl.step("sdpa alone, new shape, first", lambda: mx.eval(mx.fast.scaled_dot_product_attention(q, q, q, scale=0.1)))
        tl.step("sdpa alone, new shape, second", lambda: mx.eval(mx.fast.scaled_dot_product_attention(q, q, q, scale=0.1)))

    result = {"argv": sys.argv, "environment": bench.environment(), "timeline": tl.events}
    if not args.warm:
        # steady state, eager vs compiled, and the plain model(crops) path against the pipeline's
        def plain_np(c):
            out = model(c)
            return {f.name: np.array(getattr(out, f.name)) for f in fields(out)}

        def plain_mx(c):
            out = model(mx.array(c))
            return {f.name: np.array(getattr(out, f.name)) for f in fields(out)}

        def np_from_device(c):
            out = model(c)
            return from_device({f.name: getattr(out, f.name) for f in fields(out)})

        paths = {"pipeline (to_device + from_device)": stage, "model(np) + from_device": np_from_device,
                 "model(np) + np.array per field": plain_np, "model(mx.array(np)) + np.array per field": plain_mx}
        ab = []
        for b in (1, 64):
            for compiled in ([False, True] if not args.no_compile else [False]):
                model.compile = compiled
                stage(crops[b])
                for rnd in range(2):
                    for name, fn in paths.items():
                        if not compiled and name != "pipeline (to_device + from_device)":
                            continue
                        r = bench.bench_model_stage(fn, b, impl=("compiled " if compiled else "eager ") + name,
                                                    precision=args.precision, warmup=3, iters=args.ab_iters,
                                                    max_seconds=5, peak_memory=False, note=f"round {rnd + 1}")
                        ab.append(r.to_dict())
                        print(bench.format_table([r]).splitlines()[-1], flush=True)
        result["ab"] = ab
        if not args.no_compile:
            # a second process on the now warm cache: what every later start pays
            cmd = [sys.executable, __file__, "--cache", str(args.cache), "--warm", "--precision", args.precision,
                   "--size", args.size, "--batches", *map(str, args.batches)]
            if args.json:
                cmd += ["--json", str(args.json.with_name(args.json.stem + "_warm.json"))]
            t = time.perf_counter()
            subprocess.run(cmd, check=False)
            result["warm_process_seconds"] = round(time.perf_counter() - t, 2)
    files = ptx_files(args.cache)
    result["ptx"] = [{"name": f.name[:80], "bytes": f.stat().st_size, "mtime": f.stat().st_mtime} for f in files]
    sizes = {}
    for f in files:
        cu = f.with_suffix(".cu")
        sizes[f.name[:80]] = cu.stat().st_size if cu.exists() else None
    result["cu_bytes"] = sizes
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
