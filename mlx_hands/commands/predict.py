"""mlx-hands predict: every hand in images, folders of images or videos -> one JSON file per image.

    mlx-hands predict photo.jpg --out results/
    mlx-hands predict photos/ clip.mp4 --out results/ --model ./wilor-mlx --focal-length 1400

Per image: `<out>/<stem>.json` with the image size, the model identity and settings, the units of each field,
per-stage timings, and the hands (every field of `Hand`, see export.UNITS). Videos go to
mlx_hands.pipeline.video. A file that cannot be read is reported and skipped; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from ..config import IOU, MAX_DET, RESCALE_FACTOR
from ..export import output_dir, results_dict
from ..pipeline.images import is_image_path, load_image, write_image
from ..pipeline.runner import HandPosePipeline
from ..pipeline.stream import sigterm_as_interrupt
from ..pipeline.video import process_video
from ..render.overlay import draw_hands
from . import add_model_arguments
from .live import add_stream_arguments, stream_options

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def add_parser(sub, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help=help_text, description=(
        "Detect hands and estimate their 3D pose and MANO mesh. Writes one JSON per image into --out "
        "(videos: see mlx_hands.pipeline.video) and prints a one-line summary per image."))
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER_OR_VIDEO",
                   help="image files, folders (their images, sorted; not recursive) or videos (" + ", ".join(VIDEO_SUFFIXES) + ")")
    p.add_argument("-o", "--out", "--output", dest="out", required=True, help="output folder")
    add_model_arguments(p)
    p.add_argument("--iou", type=float, default=IOU, help=f"NMS IoU threshold, per class (default {IOU})")
    p.add_argument("--max-det", type=int, default=MAX_DET, help=f"at most this many hands per image (default {MAX_DET})")
    p.add_argument("--imgsz", type=int, default=None, help="detector input size (default: the checkpoint's)")
    p.add_argument("--rescale-factor", type=float, default=RESCALE_FACTOR,
                   help=f"crop side / largest box side (default {RESCALE_FACTOR} as WiLoR-mini; the original demo "
                        "uses 2.0)")
    p.add_argument("--focal-length", type=float, default=None, metavar="PX",
                   help="your camera's focal length in pixels of the input image (default: WiLoR's 5000/256 * max(W, H))")
    p.add_argument("--no-vertices", action="store_true", help="leave the 778 mesh vertices out of images' JSON")
    p.add_argument("--vertices", action="store_true",
                   help="also write the 778 mesh vertices per hand into a video's JSON Lines (large; off by default)")
    p.add_argument("--annotated", action="store_true",
                   help="also write <name>_annotated.jpg per image: meshes, skeletons, boxes and sides drawn on it")
    add_stream_arguments(p)
    p.set_defaults(func=run)
    return p


def _check_args(args) -> None:
    if not 0 <= args.conf <= 1:
        raise ValueError(f"--conf must be in [0, 1], got {args.conf}")
    if not 0 <= args.iou <= 1:
        raise ValueError(f"--iou must be in [0, 1], got {args.iou}")
    if args.max_det < 1:
        raise ValueError(f"--max-det must be at least 1, got {args.max_det}")
    if args.rescale_factor <= 0:
        raise ValueError(f"--rescale-factor must be positive, got {args.rescale_factor}")
    if args.focal_length is not None and args.focal_length <= 0:
        raise ValueError(f"--focal-length must be a positive number of pixels, got {args.focal_length}")


def collect_inputs(inputs: list[str]) -> tuple[list[tuple[str, Path]], list[str]]:
    """-> ([(kind 'image' | 'video', path)], [error lines]) in the order given, folders expanded and sorted."""
    items, errors = [], []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and is_image_path(f))
            if not files:
                errors.append(f"{p}: error: no images in this folder")
            items += [("image", f) for f in files]
        elif p.suffix.lower() in VIDEO_SUFFIXES:
            if p.is_file():
                items.append(("video", p))
            else:
                errors.append(f"{p}: error: no such video file")
        elif p.exists():
            items.append(("image", p))
        else:
            errors.append(f"{p}: error: no such file or folder")
    return items, errors


def _json_name(path: Path, used: set[str]) -> str:
    name = f"{path.stem}.json"
    if name in used:  # photo.jpg and photo.png in one run
        name = f"{path.name}.json"
    n = 1
    while name in used:
        name = f"{path.stem}-{n}.json"
        n += 1
    used.add(name)
    return name


def summary_line(name: str, hands, seconds: float) -> str:
    desc = ", ".join(f"{h.side} {h.confidence:.2f}" for h in hands)
    count = f"{len(hands)} hand{'s' if len(hands) != 1 else ''}"
    return f"{name}: {count}{f' ({desc})' if desc else ''} {seconds * 1000:.0f} ms"


def image_result(path: Path, image_wh, hands, pipe, timings: dict) -> dict:
    """The JSON document of one image (the same one `mlx-hands serve` answers with)."""
    return results_dict(hands, image_size=image_wh, source=path, model=dict(pipe.info), settings=pipe.settings_dict(),
                        timings_ms={k: round(v * 1000, 3) for k, v in timings.items()})


def _process_video(pipe, path: Path, out: Path, include_vertices: bool, tracking: dict) -> bool:
    """One video -> files in out and one line (stdout, or stderr naming what was wrong) -> False if incomplete."""
    s = process_video(pipe, path, out, include_vertices=include_vertices, **tracking)
    if not s.complete:
        print(f"{path}: error: {s.error} (results for {s.frames} frames kept in {out})", file=sys.stderr, flush=True)
        return False
    print(f"{path.name}: {s.frames} frames, {s.hands} hands, {s.tracks} tracks, detector on {s.detections} frames, "
          f"{s.processing_fps:.1f} frames/s -> {s.results_path}", flush=True)
    return True


def _error_line(path: Path, error: Exception) -> str:
    """`path: error: what`, naming the file once (errors from the readers often start with it already)."""
    msg = str(error)
    for prefix in (str(path), path.name):
        if msg.startswith(prefix):
            msg = msg[len(prefix):].lstrip(": ")
            break
    return f"{path}: error: {msg}"


def run(args) -> int:
    _check_args(args)
    tracking = stream_options(args)
    items, errors = collect_inputs(args.inputs)
    for line in errors:
        print(line, file=sys.stderr)
    if not items:
        return 1
    # the output folder is checked before the model loads and removed again if nothing is written; SIGTERM stops
    # like Ctrl-C (what is done is kept, a video's summary is written)
    with output_dir(args.out) as out, sigterm_as_interrupt():
        pipe = HandPosePipeline.from_pretrained(
            args.model, mano_path=args.mano, dtype=args.dtype, revision=args.revision,
            conf=args.conf, iou=args.iou, max_det=args.max_det, imgsz=args.imgsz,
            rescale_factor=args.rescale_factor, focal_length_px=args.focal_length,
        )
        failed = len(errors)
        used: set[str] = set()
        for kind, path in items:
            try:
                if kind == "video":
                    failed += not _process_video(pipe, path, out, args.vertices, tracking)
                    continue
                t = time.perf_counter()
                image = load_image(path)
                read = time.perf_counter() - t
                hands = pipe(image, include_vertices=not args.no_vertices or args.annotated)
                seconds = time.perf_counter() - t
                timings = {"read": read, **pipe.last_timings}
                name = _json_name(path, used)
                if args.annotated:
                    picture = draw_hands(image, hands, pipe.faces())
                    write_image(out / f"{Path(name).stem}_annotated.jpg", picture)
                if args.no_vertices:
                    hands = [dataclasses.replace(h, vertices=None) for h in hands]
                result = image_result(path, (image.shape[1], image.shape[0]), hands, pipe, timings)
                (out / name).write_text(json.dumps(result))
                print(summary_line(path.name, hands, seconds), flush=True)
            except (ValueError, OSError) as e:
                failed += 1
                print(_error_line(path, e), file=sys.stderr, flush=True)
    if failed:
        print(f"{failed} input{'s' if failed != 1 else ''} failed", file=sys.stderr)
    return 1 if failed else 0
