"""Video in, annotated video + per-frame results out; the one loop that video files and the webcam share.

    summary = process_video(pipe, "clip.mp4", "results/")
    # results/clip_annotated.mp4   the frames with meshes, skeletons, boxes and track ids
    # results/clip.jsonl           one JSON object per frame: {"frame", "time", "hands": [...]}
    # results/clip.json            the summary (frames, fps, files, settings, complete or not and why)

The loop: frames (`iter_frames`) -> `stream.HandStream` (detect or track, lock sides, smooth) -> `draw_frame`
-> a sink (`process_video` writes files; `mlx-hands live` shows a window): `stream_frames` is that loop.

What survives a stop:
- the JSON Lines file is flushed after every frame (the annotated frame is written just before its line, so a
  stopped video holds the JSONL's frames, or one more);
- the annotated video is a fragmented MP4 (PyAV; each frame its own fragment, flushed as soon as the muxer
  writes it: when the next frame arrives), so a file cut anywhere (an exception, Ctrl-C, SIGTERM, SIGKILL, a
  power cut) plays up to its last whole fragment: after a hard kill, all frames but the last one. Without
  PyAV, or with codec="MJPG", it is an MJPEG AVI, which players and OpenCV also read when cut short;
- the summary is rewritten every second while the run goes (`"complete": false`, `"error"` saying it is not
  finished) and at the end; an early stop, an error or a video that ends before its declared frame count gives
  `"complete": false` and an `"error"` naming what happened. `sigterm_as_interrupt()` makes SIGTERM a
  KeyboardInterrupt (stream.py; the CLI uses it), so it stops like Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from tqdm import tqdm

from ..export import ensure_dir, to_json_dict
from ..render.overlay import draw_box, draw_hands
from ..types import Hand
from .stream import HandStream, Terminated

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
    hands: int  # hands over all frames
    tracks: int  # distinct track ids
    width: int
    height: int
    video_fps: float
    seconds: float  # wall time of the whole run
    processing_fps: float
    complete: bool  # False if the run stopped early (error, Ctrl-C, SIGTERM) or the video ended too soon
    results_path: str
    video_path: str | None
    summary_path: str
    settings: dict
    frames_declared: int | None = None  # the frame count in the file's header (None if it has none)
    detections: int = 0  # frames on which the detector ran
    error: str | None = None  # why the run is not complete


def pipe_faces(pipe) -> np.ndarray | None:
    """MANO right-hand faces from a pipeline (`faces` attribute, or method taking is_right), or None."""
    f = getattr(pipe, "faces", None)
    if f is None:
        return None
    if callable(f):
        f = f(True)
    return np.asarray(f)


# ------------------------------------------------------------------------------------------- the loop
@dataclasses.dataclass
class StreamFrame:
    index: int
    t: float  # seconds
    rgb: np.ndarray  # the frame as read, (H, W, 3) RGB uint8
    hands: list[Hand]
    image: np.ndarray | None  # the annotated frame (RGB; mirrored if asked), None when not drawn


def draw_frame(rgb: np.ndarray, hands: list[Hand], faces: np.ndarray | None = None, *,
               mirror: bool = False) -> np.ndarray:
    """The annotated frame: meshes (when `faces`), skeletons and labelled boxes. mirror: the picture and the
    drawings flipped left-right together, labels written after the flip so they stay readable. The labels keep
    the hands' own sides: the person's right hand is labelled right, and shows on the right, as in a mirror."""
    if not mirror:
        return draw_hands(rgb, hands, faces, mesh=faces is not None)
    out = np.ascontiguousarray(draw_hands(rgb, hands, faces, mesh=faces is not None, boxes=False)[:, ::-1])
    W = rgb.shape[1]
    for hand in hands:
        x1, y1, x2, y2 = np.asarray(hand.box, np.float64)
        draw_box(out, dataclasses.replace(hand, box=np.array([W - 1 - x2, y1, W - 1 - x1, y2])))
    return out


def stream_frames(
    stream: HandStream,
    frames: Iterable[tuple[int, float, np.ndarray]],
    *,
    draw: bool = True,
    faces: np.ndarray | None = None,
    mirror: bool = False,
) -> Iterator[StreamFrame]:
    """The loop of every video and webcam path: (index, time, RGB frame) -> hands (`stream`) -> drawing."""
    for index, t, rgb in frames:
        hands = stream(rgb, t)
        yield StreamFrame(index, t, rgb, hands, draw_frame(rgb, hands, faces, mirror=mirror) if draw else None)


# ------------------------------------------------------------------------------------------- stops
def _stop_reason(e: BaseException, frames: int) -> str:
    if isinstance(e, Terminated):
        return f"terminated (SIGTERM) after {frames} frames"
    if isinstance(e, KeyboardInterrupt):
        return f"interrupted (Ctrl-C) after {frames} frames"
    return f"stopped after {frames} frames by {type(e).__name__}: {e}"


# ------------------------------------------------------------------------------------------- video files
VIDEO_CODECS = ("h264", "mp4v", "MJPG")
_FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+default_base_moof+frag_every_frame", "flush_packets": "1"}


class _FragmentedMP4Writer:
    """H.264 (or MPEG-4 part 2) in a fragmented MP4 through PyAV: every frame is its own fragment, flushed when
    written, so a file cut anywhere plays up to its last whole frame. x264 runs with tune=zerolatency (no
    frame held back)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], codec: str):
        import av  # optional heavy dependency (FFmpeg): only to write video, never beside `live`'s camera capture

        wanted = ("libx264", "h264", "mpeg4") if codec == "h264" else ("mpeg4",)
        encoder = next((c for c in wanted if c in av.codecs_available), None)
        if encoder is None:
            raise OSError(f"cannot write video {path}: this PyAV has no {' / '.join(wanted)} encoder "
                          "(try codec='MJPG')")
        self.path = path
        self.size = size
        self._w, self._h = size[0] + size[0] % 2, size[1] + size[1] % 2  # 4:2:0 needs even sides
        try:
            self._box = av.open(str(path), "w", format="mp4", options=dict(_FRAGMENTED_MP4))
        except (OSError, av.FFmpegError) as e:
            raise OSError(f"cannot write video {path}: {e}") from e
        self._stream = self._box.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height, self._stream.pix_fmt = self._w, self._h, "yuv420p"
        if encoder == "libx264":
            self._stream.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "20"}
        self._av = av
        self._n = 0

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[1] != self._w or rgb.shape[0] != self._h:
            rgb = cv2.copyMakeBorder(rgb, 0, self._h - rgb.shape[0], 0, self._w - rgb.shape[1], cv2.BORDER_REPLICATE)
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self._n
        self._n += 1
        for packet in self._stream.encode(frame):
            self._box.mux(packet)

    def close(self) -> None:
        try:
            for packet in self._stream.encode(None):
                self._box.mux(packet)
        finally:
            self._box.close()


class _OpenCVWriter:
    """MJPEG in AVI through OpenCV: every frame a JPEG, readable when the file is cut short."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        self.path = path
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
        if not self._writer.isOpened():
            self._writer.release()
            raise OSError(f"cannot write video {path} (OpenCV could not open an MJPEG writer)")

    def write(self, rgb: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()


def open_video_writer(stem_path: Path, fps: float, size: tuple[int, int], codec: str = "h264"):
    """A writer of RGB frames (`write(rgb)`, `close()`, `path`) at `stem_path` + .mp4 (h264, mp4v: fragmented MP4
    through PyAV) or .avi (MJPG through OpenCV; also the fallback when PyAV is not installed)."""
    if codec not in VIDEO_CODECS:
        raise ValueError(f"codec must be one of {', '.join(VIDEO_CODECS)}, got {codec!r}")
    if codec != "MJPG":
        try:
            return _FragmentedMP4Writer(stem_path.with_name(stem_path.name + ".mp4"), fps, size, codec)
        except ImportError:
            log.warning("PyAV is not installed (pip install av): writing an MJPEG .avi instead of an MP4")
    return _OpenCVWriter(stem_path.with_name(stem_path.name + ".avi"), fps, size)


def declared_frames(cap: cv2.VideoCapture) -> int | None:
    """The frame count a video file's header declares, or None."""
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(n) if n and math.isfinite(n) and n > 0 else None


# Containers whose frame count comes from an index (exact); others (MKV, WebM, MPEG-TS) estimate it from the
# duration and may be one frame over.
_EXACT_COUNT = (".mp4", ".m4v", ".mov", ".avi")


def _shortfall(path: Path, read: int, declared: int | None) -> str | None:
    if declared is None:
        return None
    slack = 0 if path.suffix.lower() in _EXACT_COUNT else 1
    if read + slack >= declared:
        return None
    return (f"the video ended after {read} of the {declared} frames its header declares: "
            "the file is truncated or damaged")


def _write_json(path: Path, data: dict) -> None:
    """Replace `path` atomically (a reader never sees half a file, a kill never leaves one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def process_video(
    pipe,
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    render: bool = True,
    mesh: bool = True,
    include_vertices: bool = False,
    max_frames: int | None = None,
    progress: bool = True,
    codec: str = "h264",
    stem: str | None = None,
    **tracking,
) -> VideoSummary:
    """Run `pipe` on every frame of a video file through a `HandStream` (detect or track, lock sides, smooth)
    and write `<stem>.jsonl` (+ `<stem>_annotated.mp4` when `render`) and `<stem>.json` into `out_dir`.

    tracking: options of stream.HandStream (track, detect_every, max_hands, handedness_lock,
    force_handedness, swap_handedness, smooth, min_cutoff, beta, d_cutoff, max_lost, ...). mesh: draw MANO
    meshes (needs `pipe.faces`). include_vertices: also write the 778 vertices per hand into the JSONL (large).
    codec: "h264" (default) or "mp4v": fragmented .mp4 (PyAV); "MJPG": .avi (OpenCV).
    A video that ends before the frame count its header declares gives `complete: false` and an `error`.
    """
    src = Path(path)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if codec not in VIDEO_CODECS:
        raise ValueError(f"codec must be one of {', '.join(VIDEO_CODECS)}, got {codec!r}")
    # the vertices are computed when written or drawn
    stream = HandStream(pipe, include_vertices=include_vertices or (render and mesh), **tracking)
    stem = stem or src.stem
    cap, fps = open_capture(src)  # a missing or unreadable file fails here, before any output exists
    declared = declared_frames(cap)
    total = declared if max_frames is None else min(declared or max_frames, max_frames)
    frames = _read(cap, fps, False, max_frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{src}: no frames could be read from this video")
    h, w = first[2].shape[:2]

    out = ensure_dir(out_dir)
    results_path = out / f"{stem}.jsonl"
    summary_path = out / f"{stem}.json"
    faces = pipe_faces(pipe) if (render and mesh) else None
    settings = {**stream.settings(), "render": render, "mesh": faces is not None,
                "include_vertices": include_vertices, "codec": codec}

    try:
        jsonl = open(results_path, "w", encoding="utf-8", newline="\n")
    except OSError as e:
        frames.close()
        raise OSError(f"cannot write {results_path}: {e.strerror or e}") from e
    n_frames = n_hands = 0
    track_ids: set[int] = set()
    complete, error, stopped = False, None, False
    writer = bar = None
    t_start = time.perf_counter()

    def summary() -> VideoSummary:
        seconds = time.perf_counter() - t_start
        return VideoSummary(
            source=str(src), frames=n_frames, hands=n_hands, tracks=len(track_ids), width=w, height=h,
            video_fps=fps, seconds=round(seconds, 3),
            processing_fps=round(n_frames / seconds, 3) if seconds > 0 else 0.0, complete=complete,
            results_path=str(results_path), video_path=None if writer is None else str(writer.path),
            summary_path=str(summary_path), settings=settings, frames_declared=declared,
            detections=stream.detections, error=error,
        )

    try:
        if render:
            writer = open_video_writer(out / f"{stem}_annotated", fps, (w, h), codec)
        error = "not finished: the run was going when this was written (if it stays so, the process was killed)"
        _write_json(summary_path, dataclasses.asdict(summary()))
        last_write = time.perf_counter()
        bar = _progress(total, src.name, progress)
        for f in stream_frames(stream, _chain(first, frames), draw=render, faces=faces):
            line = {"frame": f.index, "time": round(f.t, 6),
                    "hands": [to_json_dict(hd, include_vertices=include_vertices) for hd in f.hands]}
            # the video frame first: a stop at any point leaves the video at most one frame ahead of the JSONL
            if writer is not None:
                writer.write(f.image)
            jsonl.write(json.dumps(line) + "\n")
            jsonl.flush()
            n_frames += 1
            n_hands += len(f.hands)
            track_ids.update(hd.track_id for hd in f.hands)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(hands=len(f.hands), refresh=False)
            if time.perf_counter() - last_write > 1.0:
                _write_json(summary_path, dataclasses.asdict(summary()))
                last_write = time.perf_counter()
        error = None if max_frames is not None and n_frames >= max_frames else _shortfall(src, n_frames, declared)
        complete = error is None
    except BaseException as e:
        stopped = True
        jsonl.close()
        n_frames = _count_lines(results_path)  # a stop between two statements: the file says what was written
        error = _stop_reason(e, n_frames)
        raise
    finally:
        frames.close()
        jsonl.close()
        try:
            if writer is not None:
                writer.close()
        finally:
            if bar is not None:
                bar.close()
            result = summary()
            try:
                _write_json(summary_path, dataclasses.asdict(result))
            except OSError as e:
                log.error("could not write %s: %s", summary_path, e)
            if stopped:  # the exception goes on to the caller: say here what was kept
                log.warning("%s: %s; results for %d frames kept in %s", src, error, n_frames, out)
    return result


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _chain(first, rest):
    yield first
    yield from rest


def _progress(total, name: str, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, desc=name, unit="frame", dynamic_ncols=True)
