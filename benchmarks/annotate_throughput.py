"""Throughput of `mlx-hands annotate`: frames/s and hands/s on a folder of photos and a video, the local
engine against Ray Data with one worker, and where the time goes (setup, decode, detect, model, write).

    # this CPU: the tiny synthetic model (tests' recipe) on synthetic 1280x720 photos and video
    python benchmarks/annotate_throughput.py --model tiny
    # full-size WiLoR + detector with random weights (time does not depend on weight values), a small set
    python benchmarks/annotate_throughput.py --model full --num-photos 4 --video-frames 4 --max-det 1
    # a GPU machine: real weights and real photos / video (converted folder, originals or a Hub id)
    python benchmarks/annotate_throughput.py --model warmshao/WiLoR-mini --photos photos/ --video clip.mp4 \\
        --batch-size 16 --json annotate_h200.json

Stages are summed inside the workers: decode (file read + image decode, or video decode), detect (the
detector, per image), model (crops + one WiLoR call per batch + post-processing), write (Parquet rows and
commits); setup is model loading (and starting Ray); `other` is the rest of the wall time (driver, Ray
scheduling, tracking). With random detector weights and --conf 0, every frame has --max-det hands.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mlx_hands  # noqa: E402, F401 (first: it puts the system OpenBLAS in place before MLX loads)

import dataclasses  # noqa: E402

import cv2  # noqa: E402
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from mlx_hands import synthetic  # noqa: E402
from mlx_hands.config import DetectorConfig, WiLoRConfig  # noqa: E402

STAGES = ("setup", "decode", "detect", "model", "write")


def tiny_model(dst: Path) -> Path:
    return synthetic.write_model(dst, synthetic.TINY, dataclasses.replace(synthetic.TINY_DETECTOR, imgsz=160))


def full_random_model(dst: Path, dtype: str) -> Path:
    return synthetic.write_model(dst, WiLoRConfig(), DetectorConfig(), dtype=dtype)


def photo(rng, w: int, h: int) -> np.ndarray:
    """Smooth colour fields plus a little noise: compresses and decodes like a photo, not like noise."""
    small = rng.integers(0, 255, (max(2, h // 32), max(2, w // 32), 3)).astype(np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def make_data(dst: Path, n_photos: int, n_frames: int, w: int, h: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    photos = dst / "photos"
    photos.mkdir(parents=True)
    for i in range(n_photos):
        cv2.imwrite(str(photos / f"photo{i:04d}.jpg"), photo(rng, w, h), [cv2.IMWRITE_JPEG_QUALITY, 90])
    video = dst / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    base = photo(rng, w + 4 * n_frames, h)
    for i in range(n_frames):
        writer.write(np.ascontiguousarray(base[:, 4 * i:4 * i + w]))
    writer.release()
    return photos, video


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="'tiny', 'full' (random weights) or a model path / Hub id")
    p.add_argument("--dtype", default=None, help="compute dtype (and the stored dtype of --model full)")
    p.add_argument("--photos", default=None, help="a folder of photos (default: synthetic)")
    p.add_argument("--video", default=None, help="a video file (default: synthetic)")
    p.add_argument("--num-photos", type=int, default=32)
    p.add_argument("--video-frames", type=int, default=60)
    p.add_argument("--size", default="1280x720", help="synthetic photo and video size WxH")
    p.add_argument("--engines", default="local,ray")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=1, help="Ray actors")
    p.add_argument("--gpus-per-worker", type=float, default=None)
    p.add_argument("--conf", type=float, default=None, help="default: 0 for random models, 0.3 for real ones")
    p.add_argument("--max-det", type=int, default=2)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()

    from mlx_hands.annotate.worker import ModelSpec, Settings

    tmp = Path(tempfile.mkdtemp(prefix="annotate-bench-"))
    random_weights = args.model in ("tiny", "full")
    if args.model == "tiny":
        model = tiny_model(tmp / "model")
    elif args.model == "full":
        model = full_random_model(tmp / "model", args.dtype or "float32")
    else:
        model = args.model
    w, h = map(int, args.size.lower().split("x"))
    if args.photos is None or args.video is None:
        photos, video = make_data(tmp / "data", args.num_photos, args.video_frames, w, h)
    photos = Path(args.photos) if args.photos else photos
    video = Path(args.video) if args.video else video
    conf = args.conf if args.conf is not None else (0.0 if random_weights else 0.3)
    settings = Settings(conf=conf, max_det=args.max_det)
    spec = ModelSpec(str(model), dtype=None if args.model == "full" else args.dtype)

    try:
        run_engines(args, tmp, photos, video, spec, settings)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the synthetic model and data (2.5 GB for --model full)


def run_engines(args, tmp: Path, photos: Path, video: Path, spec, settings) -> None:
    from mlx_hands.annotate.engine import annotate
    from mlx_hands.annotate.store import read_hands

    results, tables = [], {}
    for engine in args.engines.split(","):
        out = tmp / f"out-{engine}"
        ray_args = {"workers": args.workers, "gpus_per_worker": args.gpus_per_worker} if engine == "ray" else {}
        t = time.perf_counter()
        s = annotate([str(photos), str(video)], out, spec=spec, settings=settings, engine=engine,
                     batch_size=args.batch_size, progress=False, **ray_args)
        results.append(row(engine, ray_args.get("workers", 1), s, time.perf_counter() - t))
        tables[engine] = read_hands(out).sort_by([(c, "ascending") for c in ("source", "frame", "hand")])
        mx.clear_cache()  # the next engine starts without this one's buffers
        print(json.dumps(results[-1]), flush=True)

    first = next(iter(tables.values()))
    same = all(t.num_rows == first.num_rows and t.equals(first) for t in tables.values())
    n_photos = args.num_photos if args.photos is None else "given"
    n_frames = args.video_frames if args.video is None else "given"
    print(f"\nmodel {args.model}, {n_photos} photos + {n_frames}-frame video, batch {args.batch_size}, "
          f"max_det {args.max_det}; rows equal across engines: {same}\n")
    print(table(results))
    if args.json:
        machine = f"{platform.node()} {platform.processor() or platform.machine()}, mlx {mx.__version__}, " \
                  f"device {mx.default_device()}"
        doc = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": machine, "rows_equal": same, "results": results}
        Path(args.json).write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json}")


def row(engine: str, workers: int, s, wall: float) -> dict:
    stages = {k: s.timings.get(k, 0.0) for k in STAGES}
    steady = max(wall - stages["setup"], 1e-9)
    return {"engine": engine, "workers": workers, "items": s.items, "done": s.done, "failed": s.failed,
            "frames": s.frames, "hands": s.hands, "wall_s": round(wall, 3),
            "frames_per_s": round(s.frames / wall, 2), "hands_per_s": round(s.hands / wall, 2),
            "frames_per_s_after_setup": round(s.frames / steady, 2),
            "hands_per_s_after_setup": round(s.hands / steady, 2),
            "stages_s": {k: round(v, 3) for k, v in stages.items()}, "other_s": round(wall - sum(stages.values()), 3)}


def table(results: list[dict]) -> str:
    lines = ["| engine | frames | hands | wall s | frames/s | hands/s | frames/s after setup | "
             + " | ".join(STAGES) + " | other |", "|---" * (8 + len(STAGES)) + "|"]
    for r in results:
        name = r["engine"] + (f" ({r['workers']} worker{'s' * (r['workers'] > 1)})" if r["engine"] == "ray" else "")
        cells = [name, r["frames"], r["hands"], f"{r['wall_s']:.1f}", f"{r['frames_per_s']:.2f}",
                 f"{r['hands_per_s']:.2f}", f"{r['frames_per_s_after_setup']:.2f}"]
        cells += [f"{r['stages_s'][k]:.2f}" for k in STAGES] + [f"{r['other_s']:.2f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
