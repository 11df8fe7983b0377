"""mlx-hands annotate: images, videos, folders or manifests -> Parquet tables of hands, resumable.

    mlx-hands annotate photos/ clips/ --out ann/
    mlx-hands annotate list.csv --out ann/ --engine ray --ray-address auto --workers 8 --gpus-per-worker 1

Writes ann/hands/*.parquet (one row per hand), ann/items/*.parquet (one row per item) and ann/run.json. Run
the same command again to resume. Exit status: 0 when every item is done, 1 when some failed (the summary
line says how many), 2 on a usage error. See docs/annotate.md.
"""

from __future__ import annotations

import argparse
import sys

from ..annotate.engine import ENGINES, IMAGES_PER_PART, annotate
from ..annotate.worker import ModelSpec, Settings
from ..config import IOU, MAX_DET
from . import add_model_arguments


def add_parser(sub, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser("annotate", help=help_text, description=(
        "Annotate a collection of images and videos with hands (box, side, keypoints, MANO parameters, camera; "
        "mesh vertices with --vertices) into Parquet files. Resumes by default: run it again to finish an "
        "interrupted run; a run killed at any moment loses no finished item and doubles none."))
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image or video files, folders (searched recursively) or manifests (.txt one path a line; "
                        ".csv or .parquet with a 'path' column; relative entries are relative to the manifest)")
    p.add_argument("-o", "--out", "--output", dest="out", required=True, help="output folder")
    add_model_arguments(p)
    p.add_argument("--iou", type=float, default=IOU, help=f"NMS IoU threshold, per class (default {IOU})")
    p.add_argument("--max-det", type=int, default=MAX_DET, help=f"at most this many hands per frame (default {MAX_DET})")
    p.add_argument("--imgsz", type=int, default=None, help="detector input size (default: the checkpoint's)")
    p.add_argument("--rescale-factor", type=float, default=2.5, help="crop side / largest box side (default 2.5)")
    p.add_argument("--focal-length", type=float, default=None, metavar="PX",
                   help="the camera's focal length in pixels (default: WiLoR's 5000/256 * max(W, H))")
    p.add_argument("--every-nth-frame", type=int, default=1, metavar="K", help="videos: annotate frames 0, K, 2K, ...")
    p.add_argument("--vertices", action="store_true", help="also store the 778 MANO vertices per hand (9 KB a hand)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B",
                   help="images or video frames per model call (default 8)")
    p.add_argument("--images-per-part", type=int, default=IMAGES_PER_PART, metavar="N",
                   help=f"images committed together, one Parquet file each in hands/ and items/ (default "
                        f"{IMAGES_PER_PART}; rounded up to whole batches; a video is always its own part)")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process (default); ray: Ray Data actors (pip install 'mlx-hands[ray]')")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this Ray cluster ('auto', or host:port, or ray://host:10001); default: start a local one")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="Ray actors, each loading the model once (default: one per GPU, or 1)")
    p.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                   help="GPUs per Ray actor (default 1 when the cluster has GPUs, else 0)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--no-resume", "--overwrite", dest="no_resume", action="store_true",
                       help="start over: delete what --out holds from an earlier run and annotate everything")
    again.add_argument("--new-folder", action="store_true",
                       help="if --out holds a run with another model or settings, write to OUT-2 (OUT-3, ...) instead")
    p.add_argument("--retry-failed", action="store_true", help="try the items that failed in an earlier run again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    settings = Settings(conf=args.conf, iou=args.iou, max_det=args.max_det, imgsz=args.imgsz,
                        rescale_factor=args.rescale_factor, focal_length_px=args.focal_length,
                        every_nth_frame=args.every_nth_frame, vertices=args.vertices)
    spec = ModelSpec(model=args.model, revision=args.revision, mano=args.mano, dtype=args.dtype)
    summary = annotate(
        args.inputs, args.out, spec=spec, settings=settings, engine=args.engine, batch_size=args.batch_size,
        images_per_part=args.images_per_part, resume=not args.no_resume, new_folder=args.new_folder,
        retry_failed=args.retry_failed, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        ray_address=args.ray_address, progress=not args.no_progress)
    print(summary.line(), flush=True)
    if summary.failed:
        print(f"{summary.failed} item{'s' if summary.failed != 1 else ''} failed: see the rows of {summary.out}/items "
              "with status 'failed'", file=sys.stderr)
    return 1 if summary.failed else 0
