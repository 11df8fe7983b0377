"""Annotate one part (a run of images or one video) and commit it: the code every engine runs.

    worker = Annotator(pipe, settings, out="ann/", run=run, batch_size=16)
    statuses = worker(part)          # hands/part-<id>.parquet and items/part-<id>.parquet are in place

Images: each file is checked for completeness (a JPEG must reach its end-of-image marker, a PNG its IEND
chunk: OpenCV decodes a cut-off JPEG without complaint, filling the rest grey), decoded, and the images of a
model batch go through pipe.predict_many together. Videos: frames are decoded with OpenCV, every k-th frame
is annotated, batch_size frames per model call, and track ids come from HandTracker (raw values: no
smoothing). A video that stops short of the frame count its container declares is `failed` with no hand
rows: hands/ only holds rows of items that were annotated completely.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..config import CONF, CONFIG_FILE, IOU, MANO_FILE, MAX_DET, MODEL_FILE
from ..hub import resolve
from ..pipeline.images import read_image
from ..pipeline.runner import HandPosePipeline
from ..pipeline.tracking import HandTracker
from ..pipeline.video import open_capture
from .inputs import Item, Part
from .schema import dumps, hands_schema, hands_table, items_table
from .store import PartWriter

log = logging.getLogger(__name__)

FRAME_SLACK = 0.01  # a video may decode this fraction (at least 1 frame) fewer frames than declared: estimated counts
SAMPLE = 1 << 20  # bytes read from the start and the end of a weights file for its fingerprint


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to load the model (as --model/--revision/--mano/--dtype say); resolved on every worker."""

    model: str | None = None
    revision: str | None = None
    mano: str | None = None
    dtype: str | None = None


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that changes the rows; stored in run.json and checked when a run resumes."""

    conf: float = CONF
    iou: float = IOU
    max_det: int = MAX_DET
    imgsz: int | None = None
    rescale_factor: float = 2.5
    focal_length_px: float | None = None
    every_nth_frame: int = 1
    vertices: bool = False

    def check(self) -> None:
        if not 0 <= self.conf <= 1:
            raise ValueError(f"--conf must be in [0, 1], got {self.conf}")
        if not 0 <= self.iou <= 1:
            raise ValueError(f"--iou must be in [0, 1], got {self.iou}")
        if self.max_det < 1:
            raise ValueError(f"--max-det must be at least 1, got {self.max_det}")
        if self.imgsz is not None and (self.imgsz < 32 or self.imgsz % 32):
            raise ValueError(f"--imgsz must be a multiple of 32, at least 32, got {self.imgsz}")
        if not self.rescale_factor > 0:
            raise ValueError(f"--rescale-factor must be positive, got {self.rescale_factor}")
        if self.focal_length_px is not None and not self.focal_length_px > 0:
            raise ValueError(f"--focal-length must be a positive number of pixels, got {self.focal_length_px}")
        if self.every_nth_frame < 1:
            raise ValueError(f"--every-nth-frame must be at least 1, got {self.every_nth_frame}")


def load_pipeline(spec: ModelSpec, settings: Settings) -> HandPosePipeline:
    return HandPosePipeline.from_pretrained(
        spec.model, mano_path=spec.mano, dtype=spec.dtype, revision=spec.revision, conf=settings.conf,
        iou=settings.iou, max_det=settings.max_det, imgsz=settings.imgsz, rescale_factor=settings.rescale_factor,
        focal_length_px=settings.focal_length_px)


def _fingerprint(path: Path, h) -> None:
    """Feed a file's size and its first and last MiB (and 16 blocks between) to hash h: cheap on a 2.5 GB file,
    and enough to tell two weight files apart."""
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size - SAMPLE), *(size * k // 17 for k in range(1, 17))}):
            f.seek(offset)
            h.update(f.read(SAMPLE if offset in (0, max(0, size - SAMPLE)) else 1 << 16))


def model_identity(spec: ModelSpec) -> dict:
    """What makes the model: a fingerprint of its converted files (config, weights, MANO) and the dtype.
    Computed from the files alone (no model is built), so a Ray driver without a GPU can check it."""
    local = Path(resolve(spec.model, revision=spec.revision))
    h = hashlib.sha256()
    for f in (CONFIG_FILE, MODEL_FILE):
        if (local / f).is_file():
            _fingerprint(local / f, h)
    mano = Path(spec.mano) if spec.mano else local / MANO_FILE
    return {"model": spec.model, "fingerprint": h.hexdigest()[:24], "dtype": spec.dtype,
            "mano": _digest_file(mano) if mano.is_file() else None}


def _digest_file(path: Path) -> str:
    h = hashlib.sha256()
    _fingerprint(path, h)
    return h.hexdigest()[:24]


# ---------------------------------------------------------------------------------------------- videos
class VideoFrames:
    """(index, time s, RGB frame) of every k-th frame of a video file; `decoded` counts all frames read and
    `declared` is the container's frame count (None if it gives none)."""

    def __init__(self, path: str, every_nth: int = 1):
        self.cap, self.fps = open_capture(path)
        n = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.declared = int(n) if n and math.isfinite(n) and n > 0 else None
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)) or None
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) or None
        self.every_nth, self.decoded, self.decode_seconds = every_nth, 0, 0.0

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        try:
            while True:
                t = time.perf_counter()
                keep = self.decoded % self.every_nth == 0
                ok, bgr = self.cap.read() if keep else (self.cap.grab(), None)
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if keep else None
                self.decode_seconds += time.perf_counter() - t
                i, self.decoded = self.decoded, self.decoded + 1
                if keep:
                    yield i, i / self.fps, rgb
        finally:
            self.cap.release()

    def shortfall(self) -> str | None:
        """Why the video counts as incomplete after iteration, or None."""
        if self.decoded == 0:
            return "no frames could be read from this video"
        if self.declared and self.declared - self.decoded > max(1, int(FRAME_SLACK * self.declared)):
            return f"video ends after {self.decoded} of its {self.declared} frames (truncated or damaged file)"
        return None


def _batches(frames: Iterable, size: int) -> Iterator[list]:
    batch = []
    for f in frames:
        batch.append(f)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def track_video(predict: Callable[[list[np.ndarray]], list[list]], frames: Iterable[tuple[int, float, np.ndarray]], *,
                batch_size: int, tracker: HandTracker | None = None) -> Iterator[tuple[int, float, list]]:
    """(index, time, RGB) frames -> (index, time, hands with track ids); `predict` (RGB frames -> hands per
    frame, e.g. pipe.predict_many) gets batch_size frames a call. The per-video loop: one function, so that
    another way of following hands through a video can take its place."""
    tracker = tracker or HandTracker(smooth=False, keep_raw=False)
    for batch in _batches(frames, batch_size):
        for (i, t, _), hands in zip(batch, predict([f for _, _, f in batch])):
            yield i, t, tracker.update(hands, t)


# ---------------------------------------------------------------------------------------------- parts
def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if not isinstance(e, (ValueError, OSError)):
        text = f"{type(e).__name__}: {text}"  # unexpected: name it
    return text[:500]


def worker_name() -> str:
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{socket.gethostname()}:{os.getpid()}" + (f" gpu {gpus}" if gpus else "")


class Annotator:
    """Annotates parts with one loaded pipeline and commits each into `out`. Returns status dicts per item.

    `run` is the run.json identity ({"model": ..., "settings": ...}); its JSON goes into every items row.
    `timings` accumulates seconds per stage: decode, detect, model (crop + network + post), write.
    """

    def __init__(self, pipe: HandPosePipeline, settings: Settings, out: str | os.PathLike, run: dict, batch_size: int):
        self.pipe, self.settings, self.out, self.batch_size = pipe, settings, Path(out), batch_size
        self.model_json, self.settings_json = dumps(run["model"]), dumps(run["settings"])
        self.schema = hands_schema(settings.vertices)
        self.worker = worker_name()
        self.timings = dict.fromkeys(("decode", "detect", "model", "write"), 0.0)

    def _status(self, item: Item, part: Part, **kw) -> dict:
        return {"source": item.source, "path": item.path, "kind": item.kind, "part": part.name,
                "worker": self.worker, "model": self.model_json, "settings": self.settings_json,
                "frames": 0, "hands": 0, **kw}

    def _predict(self, images: Sequence[np.ndarray]) -> list[list]:
        hands = self.pipe.predict_many(images, include_vertices=self.settings.vertices)
        t = self.pipe.last_timings
        self.timings["detect"] += t.get("detect", 0.0)
        self.timings["model"] += t.get("crop", 0.0) + t.get("model", 0.0) + t.get("post", 0.0)
        return hands

    def __call__(self, part: Part) -> list[dict]:
        writer = PartWriter(self.out, part.name, self.schema)
        try:
            if part.kind == "video":
                statuses = [self._video(part, writer)]
            else:
                statuses = self._images(part, writer)
            t = time.perf_counter()
            writer.commit(items_table(statuses))
            self.timings["write"] += time.perf_counter() - t
        except BaseException:
            writer.discard()
            raise
        return statuses

    def _images(self, part: Part, writer: PartWriter) -> list[dict]:
        statuses = []
        for batch in _batches(part.items, self.batch_size):
            t0 = time.perf_counter()
            ok, images, seconds = [], [], {}
            for item in batch:
                t = time.perf_counter()
                try:
                    images.append(read_image(item.path))
                    ok.append(item)
                except Exception as e:  # noqa: BLE001 - one bad file is a failed row, the run goes on
                    statuses.append(self._status(item, part, status="failed", error=one_line(e),
                                                 seconds=time.perf_counter() - t))
                seconds[item.path] = time.perf_counter() - t
            self.timings["decode"] += time.perf_counter() - t0
            if not ok:
                continue
            t = time.perf_counter()
            try:
                results = self._predict(images)
            except Exception as e:  # noqa: BLE001
                log.debug("model batch failed", exc_info=True)
                statuses += [self._status(i, part, status="failed", error=one_line(e), seconds=seconds[i.path])
                             for i in ok]
                continue
            share = (time.perf_counter() - t) / len(ok)
            t = time.perf_counter()
            rows = [(item.source, 0, None, j, None, h) for item, hands in zip(ok, results) for j, h in enumerate(hands)]
            writer.add(hands_table(rows, self.settings.vertices))
            self.timings["write"] += time.perf_counter() - t
            for item, image, hands in zip(ok, images, results):
                statuses.append(self._status(item, part, status="done", frames=1, hands=len(hands),
                                             seconds=seconds[item.path] + share, width=image.shape[1],
                                             height=image.shape[0]))
        return statuses

    def _video(self, part: Part, writer: PartWriter) -> dict:
        (item,) = part.items
        t0 = time.perf_counter()
        frames, hands, video = 0, 0, None
        try:
            video = VideoFrames(item.path, self.settings.every_nth_frame)
            for i, t, found in track_video(self._predict, video, batch_size=self.batch_size):
                frames += 1
                hands += len(found)
                if found:
                    tw = time.perf_counter()
                    writer.add(hands_table([(item.source, i, t, j, h.track_id, h) for j, h in enumerate(found)],
                                           self.settings.vertices))
                    self.timings["write"] += time.perf_counter() - tw
            error = video.shortfall()
        except Exception as e:  # noqa: BLE001 - a bad video is a failed row, the run goes on
            log.debug("%s failed", item.path, exc_info=True)
            error = one_line(e)
        finally:
            if video is not None:
                self.timings["decode"] += video.decode_seconds
        info = {} if video is None else {"width": video.width, "height": video.height, "fps": video.fps,
                                         "video_frames": video.declared}
        if error:
            writer.discard()  # a failed item leaves no hand rows
            return self._status(item, part, status="failed", error=error, frames=frames,
                                seconds=time.perf_counter() - t0, **info)
        return self._status(item, part, status="done", frames=frames, hands=hands,
                            seconds=time.perf_counter() - t0, **info)
