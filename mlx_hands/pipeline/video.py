"""Video in, annotated video + per-frame results out (OpenCV + numpy).

    summary = process_video(pipe, "clip.mp4", "results/")
    # results/clip_annotated.mp4   the frames with meshes, skeletons, boxes and track ids
    # results/clip.jsonl           one JSON object per frame: {"frame", "time", "hands": [...]}
    # results/clip.json            the summary (frames, fps, files, settings, complete or not)

Frames are written as they are processed: the JSON Lines file is flushed after every line and the video
writer is released in a `finally`, so an exception or Ctrl-C mid-video leaves a playable video and a valid
JSONL holding every frame done so far (the summary then says `"complete": false`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from tqdm import tqdm

from ..export import ensure_dir, to_json_dict
from ..render.overlay import draw_hands
from .tracking import HandTracker

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0  # when a file does not say


def _is_camera(source) -> bool:
    return isinstance(source, (int, np.integer)) or (isinstance(source, str) and source.strip().isdigit())


def open_capture(source: str | os.PathLike | int) -> tuple[cv2.VideoCapture, float]:
    """Open a video file or camera index with OpenCV -> (capture, fps). One clear error if it cannot be opened."""
    if _is_camera(source):
        index = int(source)
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            cap.release()
            raise ValueError(f"camera {index} could not be opened: no such camera, or it is in use "
                             "(list cameras with `ls /dev/video*` on Linux; try another --camera index)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        return cap, fps if fps and math.isfinite(fps) and fps > 0 else DEFAULT_FPS
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a video file")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise ValueError(f"{path}: cannot read this video (OpenCV could not open it; is it a video file?)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not (fps and math.isfinite(fps) and 0 < fps < 1000):
        log.warning("%s: no usable frame rate in the file, assuming %g fps", path, DEFAULT_FPS)
        fps = DEFAULT_FPS
    return cap, float(fps)


def _read(cap: cv2.VideoCapture, fps: float, camera: bool, max_frames: int | None):
    start = None
    try:
        i = 0
        while max_frames is None or i < max_frames:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            if camera:
                now = time.monotonic()
                start = now if start is None else start
                t = now - start
            else:
                t = i / fps
            yield i, t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()


def iter_frames(source: str | os.PathLike | int, *, max_frames: int | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (index, time in seconds, RGB uint8 frame) from a video file or a camera index (int or "0").

    File times are index / fps; camera times are wall-clock seconds since the first frame. The source is
    opened (and checked) at the call, and released when the iteration ends or the generator is closed.
    """
    cap, fps = open_capture(source)
    return _read(cap, fps, _is_camera(source), max_frames)


@dataclasses.dataclass
class VideoSummary:
    source: str
    frames: int  # frames processed and written
    hands: int  # hand detections over all frames
    tracks: int  # distinct track ids
    width: int
    height: int
    video_fps: float
    seconds: float  # wall time of the whole run
    processing_fps: float
    complete: bool  # False if the run stopped early on an error or Ctrl-C
    results_path: str
    video_path: str | None
    summary_path: str
    settings: dict


def pipe_faces(pipe) -> np.ndarray | None:
    """MANO right-hand faces from a pipeline (`faces` attribute, or method taking is_right), or None."""
    f = getattr(pipe, "faces", None)
    if f is None:
        return None
    if callable(f):
        f = f(True)
    return np.asarray(f)


def _open_writer(path: Path, fps: float, size: tuple[int, int], codec: str) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    if not writer.isOpened():
        writer.release()
        raise OSError(f"cannot write video {path} with codec {codec!r} (OpenCV could not open a writer; try "
                      "codec='MJPG' with a .avi name)")
    return writer


def process_video(
    pipe: Callable[[np.ndarray], list],
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    smooth: bool = True,
    min_cutoff: float = 1.0,
    beta: float = 0.02,
    d_cutoff: float = 1.0,
    max_lost: int = 15,
    render: bool = True,
    mesh: bool = True,
    include_vertices: bool = False,
    max_frames: int | None = None,
    progress: bool = True,
    codec: str = "mp4v",
    stem: str | None = None,
) -> VideoSummary:
    """Run `pipe` (RGB frame -> list[Hand]) on every frame of a video file, track and smooth the hands, and
    write `<stem>.jsonl` (+ `<stem>_annotated.mp4` when `render`) and `<stem>.json` into `out_dir`.

    smooth, min_cutoff, beta, d_cutoff, max_lost: see pipeline/tracking.py (One Euro filter; frames a lost
    hand keeps its id). mesh: draw MANO meshes (needs `pipe.faces`). include_vertices: also write the 778
    vertices per hand into the JSONL (large). codec: OpenCV fourcc for the annotated video ("mp4v" → .mp4,
    "MJPG" → .avi).
    """
    src = Path(path)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    stem = stem or src.stem
    cap, fps = open_capture(src)  # a missing or unreadable file fails here, before any output exists
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    total = int(count) if count and math.isfinite(count) and count > 0 else None  # header value, may be approximate
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames
    frames = _read(cap, fps, False, max_frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{src}: no frames could be read from this video")
    h, w = first[2].shape[:2]

    out = ensure_dir(out_dir)
    results_path = out / f"{stem}.jsonl"
    video_path = out / f"{stem}_annotated{'.avi' if codec.upper() == 'MJPG' else '.mp4'}" if render else None
    summary_path = out / f"{stem}.json"
    faces = pipe_faces(pipe) if (render and mesh) else None
    tracker = HandTracker(smooth=smooth, min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff, max_lost=max_lost)
    settings = {"smooth": smooth, "min_cutoff": min_cutoff, "beta": beta, "d_cutoff": d_cutoff, "max_lost": max_lost,
                "render": render, "mesh": faces is not None, "include_vertices": include_vertices, "codec": codec}

    try:
        jsonl = open(results_path, "w", encoding="utf-8", newline="\n")
    except OSError as e:
        frames.close()
        raise OSError(f"cannot write {results_path}: {e.strerror or e}") from e
    n_frames = n_hands = 0
    track_ids: set[int] = set()
    complete = False
    writer = bar = None
    t_start = time.perf_counter()
    try:
        if render:
            writer = _open_writer(video_path, fps, (w, h), codec)
        bar = _progress(total, src.name, progress)
        for index, t, rgb in _chain(first, frames):
            hands = tracker.update(pipe(rgb), t)
            line = {"frame": index, "time": round(t, 6),
                    "hands": [to_json_dict(hd, include_vertices=include_vertices) for hd in hands]}
            jsonl.write(json.dumps(line) + "\n")
            jsonl.flush()
            if writer is not None:
                writer.write(cv2.cvtColor(draw_hands(rgb, hands, faces, mesh=faces is not None), cv2.COLOR_RGB2BGR))
            n_frames += 1
            n_hands += len(hands)
            track_ids.update(hd.track_id for hd in hands)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(hands=len(hands), refresh=False)
        complete = True
    finally:
        frames.close()
        jsonl.close()
        if writer is not None:
            writer.release()  # writes the container index: the partial video stays playable
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t_start
        summary = VideoSummary(
            source=str(src), frames=n_frames, hands=n_hands, tracks=len(track_ids), width=w, height=h, video_fps=fps,
            seconds=round(seconds, 3), processing_fps=round(n_frames / seconds, 3) if seconds > 0 else 0.0,
            complete=complete, results_path=str(results_path), video_path=None if video_path is None else str(video_path),
            summary_path=str(summary_path), settings=settings,
        )
        try:
            summary_path.write_text(json.dumps(dataclasses.asdict(summary), indent=1))
        except OSError as e:
            log.error("could not write %s: %s", summary_path, e)
        if not complete:
            log.warning("%s: stopped after %d frames; partial results kept in %s", src, n_frames, out)
    return summary


def _chain(first, rest):
    yield first
    yield from rest


def _progress(total, name: str, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, desc=name, unit="frame", dynamic_ncols=True)
