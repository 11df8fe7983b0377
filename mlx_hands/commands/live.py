"""mlx-hands live: the annotated webcam stream in a window (meshes, skeletons, track ids, FPS).

    mlx-hands live --camera 0 --model ./wilor-mlx
    mlx-hands live --mirror              # selfie view: the window is a mirror, labels name your own hands

The frames go through the same loop as video files (pipeline.video.stream_frames: HandStream, draw).

Needs an OpenCV build with a GUI (the `opencv-python` wheel, not `opencv-python-headless`) and a display.
Press q or Esc in the window (or close it) to quit.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from ..pipeline.runner import HandPosePipeline
from ..pipeline.stream import HandStream, sigterm_as_interrupt
from ..pipeline.video import iter_frames, pipe_faces, stream_frames
from . import CLIError, add_model_arguments

WINDOW = "mlx-hands live (q to quit)"

_INSTALL_GUI = (
    "pip uninstall -y opencv-python-headless && pip install opencv-python "
    "(both provide cv2: keep only the GUI one)"
)


def gui_problem() -> str | None:
    """Why a window cannot be shown here, as a message for the user; None if it can."""
    gui = "UNKNOWN"
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip()
            break
    if gui.upper() == "NONE":
        return (f"this OpenCV ({cv2.__version__}) is built without GUI support (the opencv-python-headless "
                f"wheel), so it cannot open a window. Install the GUI build: {_INSTALL_GUI}. "
                "To process a recorded video without a window, use `mlx-hands predict clip.mp4 --out results/`.")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return ("no display: DISPLAY / WAYLAND_DISPLAY are not set (a headless machine or an ssh session without "
                "X forwarding). Run it on a desktop session or with `ssh -X`, or process a recorded video with "
                "`mlx-hands predict clip.mp4 --out results/`.")
    return None


def add_stream_arguments(p: argparse.ArgumentParser) -> None:
    """Tracking and handedness options of HandStream, shared by `live` and the video branch of `predict`."""
    g = p.add_argument_group("video and webcam: tracking")
    g.add_argument("--no-track", action="store_true",
                   help="run the detector on every frame (default: track hands from their keypoints between "
                        "detections)")
    g.add_argument("--detect-every", type=int, default=10, metavar="N",
                   help="while tracking, run the detector at least every N frames (default 10); it also runs when "
                        "a hand is lost")
    g.add_argument("--max-hands", type=int, default=None, metavar="N",
                   help="at most N hands; while N are tracked the detector runs only when one is lost")
    g.add_argument("--handedness-lock", type=int, default=3, metavar="K",
                   help="a tracked hand changes side only after K consecutive detections of the other side "
                        "(default 3; 1 = follow the detector)")
    g.add_argument("--force-handedness", choices=["left", "right"], default=None,
                   help="treat every hand as this side (e.g. a one-hand rig)")
    g.add_argument("--swap-handedness", action="store_true",
                   help="treat every hand as the side opposite to the detector's class")
    g.add_argument("--no-smooth", action="store_true", help="no temporal smoothing (track ids are still kept)")
    g.add_argument("--min-cutoff", type=float, default=1.0,
                   help="One Euro min cutoff, Hz (default 1.0; lower = steadier)")
    g.add_argument("--beta", type=float, default=0.02,
                   help="One Euro speed coefficient, 1/px (default 0.02; higher = less lag)")


def stream_options(args) -> dict:
    """HandStream keyword arguments from add_stream_arguments' options (checked before any model loads)."""
    for flag, value in (("--detect-every", args.detect_every), ("--handedness-lock", args.handedness_lock),
                        ("--max-hands", 1 if args.max_hands is None else args.max_hands)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    return {
        "track": False if args.no_track else None, "detect_every": args.detect_every, "max_hands": args.max_hands,
        "handedness_lock": args.handedness_lock, "force_handedness": args.force_handedness,
        "swap_handedness": args.swap_handedness, "smooth": not args.no_smooth, "min_cutoff": args.min_cutoff,
        "beta": args.beta,
    }


def add_parser(sub, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser("live", help=help_text, description=(
        "Detect and track hands in a webcam stream and show meshes, skeletons and track ids in a window. "
        "Needs OpenCV with GUI support (opencv-python) and a display. q or Esc quits."))
    p.add_argument("--camera", type=int, default=0, help="camera index (default 0)")
    p.add_argument("--mirror", action="store_true",
                   help="show the picture mirrored (selfie view). Hands are estimated on the camera's own picture; "
                        "labels name each person's own hand (your right hand: 'Right', on the right of the window)")
    add_model_arguments(p)
    p.add_argument("--no-mesh", action="store_true", help="draw skeletons and boxes only (faster)")
    add_stream_arguments(p)
    p.set_defaults(func=run)
    return p


def annotate_stream(
    pipe,
    frames: Iterable[tuple[int, float, np.ndarray]],
    *,
    mesh: bool = True,
    mirror: bool = False,
    **tracking,
) -> Iterator[tuple[np.ndarray, list, float]]:
    """For each (index, time, RGB frame): detect or track, smooth and draw the hands (pipeline.video.stream_frames)
    -> (BGR image with an FPS line, hands, frames per second so far (smoothed)). tracking: HandStream options."""
    faces = pipe_faces(pipe) if mesh else None
    fps, last = 0.0, None
    stream = HandStream(pipe, **{"include_vertices": faces is not None, **tracking})
    for f in stream_frames(stream, frames, faces=faces, mirror=mirror):
        now = time.perf_counter()
        if last is not None:
            inst = 1.0 / max(now - last, 1e-6)
            fps = inst if fps == 0 else 0.9 * fps + 0.1 * inst
        last = now
        bgr = cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR)
        n = len(f.hands)
        label = f"{fps:5.1f} FPS  {n} hand{'s' if n != 1 else ''}  q: quit"
        scale = max(bgr.shape[0] / 720, 0.4)
        for colour, width in (((0, 0, 0), 4), ((255, 255, 255), 1)):
            cv2.putText(bgr, label, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, colour, width,
                        cv2.LINE_AA)
        yield bgr, f.hands, fps


def run(args) -> int:
    problem = gui_problem()
    if problem:
        raise CLIError(problem)
    options = stream_options(args)
    frames = iter_frames(args.camera)  # a missing camera fails here, before the model loads
    try:
        pipe = HandPosePipeline.from_pretrained(args.model, mano_path=args.mano, dtype=args.dtype,
                                                revision=args.revision, conf=args.conf)
        with sigterm_as_interrupt():
            stream = annotate_stream(pipe, frames, mesh=not args.no_mesh, mirror=args.mirror, **options)
            for i, (bgr, _, _) in enumerate(stream):
                try:
                    cv2.imshow(WINDOW, bgr)
                except cv2.error as e:
                    raise CLIError(f"cannot open a window ({e.err or e}). Install the GUI build of OpenCV: "
                                   f"{_INSTALL_GUI}") from None
                key = cv2.waitKey(1) & 0xFF
                if key in (ord("q"), 27):
                    break
                if i > 0 and cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                    break  # window closed with the mouse
    finally:
        frames.close()
        try:
            cv2.destroyAllWindows()
        except cv2.error:
            pass
    return 0
