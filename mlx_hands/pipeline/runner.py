"""HandPosePipeline: image -> detector -> crops -> WiLoR (one batched call) -> Hand records.

The one module of pipeline/ that touches MLX: numpy arrays go in to the networks through mlx_hands.transfer and
come back as numpy right after. Everything around it (pre/post-processing, detection decoding, NMS) is
numpy/OpenCV.

    pipe = HandPosePipeline.from_pretrained("path/or/hub-repo")
    hands = pipe("photo.jpg")                        # or an (H, W, 3) RGB uint8 array
    hands = pipe.predict_with_boxes(rgb, boxes, is_right)
    many = pipe.predict_many([rgb1, rgb2])           # one WiLoR forward for the hands of all images
    many = pipe.predict_many_with_boxes([rgb1, rgb2], [boxes1, boxes2], [is_right1, is_right2])
    pipe.last_timings                                # seconds per stage of the last call
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..config import CONF, IOU, MAX_DET
from ..geometry import oriented_faces
from ..hub import load
from ..transfer import device_name, from_device, to_device
from ..weights import load_detector
from ..types import Hand
from . import postprocess, preprocess
from .detection import detect
from .images import load_image

log = logging.getLogger(__name__)

_OUTPUTS = ("cam", "keypoints_3d", "global_orient", "hand_pose", "betas")
# A caller's box may be at most this many times the image's larger side: the crop around it (2.5x the box) then
# still costs no more than a blur and a warp of the image itself; far larger ones mean a unit mix-up.
MAX_BOX_RATIO = 4


def as_numpy(network):
    """An MLX network as a numpy -> numpy function: the input goes to the device through mlx_hands.transfer, the
    (float) output comes back as float32 numpy in one copy."""

    def fn(batch: np.ndarray) -> np.ndarray:
        return from_device({"out": network(to_device(batch))})["out"]

    return fn


def folder_detector(folder):
    """(numpy detector function, DetectorConfig) of a converted folder's hand detector, or None if it has none."""
    det = load_detector(folder)
    return None if det is None else (as_numpy(det), det.config)


def validate_boxes(boxes, is_right, image_wh, confidence=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Caller-supplied boxes -> (boxes (N, 4) float64, is_right (N,) bool, confidence (N,) float32), or ValueError."""
    W, H = image_wh
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4)), np.zeros((0,), bool), np.zeros((0,), np.float32)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as x1, y1, x2, y2 pixels, got {np.shape(boxes)}")
    if not np.all(np.isfinite(b)):
        raise ValueError("boxes contain NaN or infinite values")
    r = np.asarray(is_right).reshape(-1)
    if r.size == 1 and len(b) > 1:
        r = np.repeat(r, len(b))
    if len(r) != len(b):
        raise ValueError(f"is_right must have one entry per box: {len(b)} boxes, {len(r)} is_right values")
    if not np.all((r == 0) | (r == 1)):
        raise ValueError(f"is_right must be booleans or 0 (left) / 1 (right), got {r.tolist()}")
    limit = MAX_BOX_RATIO * max(W, H)
    for i, (x1, y1, x2, y2) in enumerate(b):
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"box {i} {[x1, y1, x2, y2]} has zero or negative size (expected x1 < x2, y1 < y2)")
        if x2 <= 0 or y2 <= 0 or x1 >= W or y1 >= H:
            raise ValueError(f"box {i} {[x1, y1, x2, y2]} lies outside the {W}x{H} image")
        if max(x2 - x1, y2 - y1) > limit:
            raise ValueError(f"box {i} is {max(x2 - x1, y2 - y1):.0f} pixels across: at most {MAX_BOX_RATIO}x the "
                             f"{W}x{H} image's larger side ({limit} pixels)")
    if confidence is None:
        c = np.ones(len(b), np.float32)
    else:
        c = np.asarray(confidence, dtype=np.float32).reshape(-1)
        if c.size == 1:
            c = np.repeat(c, len(b))
        if len(c) != len(b):
            raise ValueError(f"confidence must have one entry per box: {len(b)} boxes, {len(c)} values")
    return b, r.astype(bool), c


@dataclass
class _Frame:
    """One image on its way through the pipeline: its hands' boxes, crops and camera."""

    image: np.ndarray
    boxes: np.ndarray
    is_right: np.ndarray
    confidence: np.ndarray
    keypoints: np.ndarray | None  # the detector's, or None for caller-given boxes
    camera: postprocess.Camera
    F: float  # the network's crop focal length for this image
    timings: dict
    crops: np.ndarray | None = None
    centers: np.ndarray | None = None
    sizes: np.ndarray | None = None


class HandPosePipeline:
    """Detector + WiLoR around numpy images.

    model: a WiLoR model (`model(crops (B, 256, 256, 3) RGB 0..255, focal_length=) -> WiLoROutput`, `model.faces`).
    detector: the YOLOv8-pose hand detector (`detector(mx (1, h, w, 3) uint8 letterboxed RGB) -> decoded head
        output`), or None: then only predict_with_boxes works.
    conf, iou, max_det, imgsz: detector settings (WiLoR's demo: 0.3, ultralytics' 0.7 and 300; imgsz None = the
        detector config's). rescale_factor: crop side / max box side (2.5 as WiLoR-mini; the original demo 2.0).
    focal_length: the crop camera's F in WiLoR units (default: the model config's, 5000); focal_length_px: a
        real focal length in pixels of the input images instead. See postprocess for the camera conventions.
    info: the model's identity for result files (mlx_hands.hub.model_info).
    """

    def __init__(
        self,
        model,
        detector=None,
        *,
        conf: float = CONF,
        iou: float = IOU,
        max_det: int = MAX_DET,
        imgsz: int | None = None,
        rescale_factor: float = preprocess.RESCALE_FACTOR,
        focal_length: float | None = None,
        focal_length_px: float | None = None,
        info: dict | None = None,
    ):
        self.model = model
        self.detector = detector
        self.conf, self.iou, self.max_det, self.imgsz = conf, iou, max_det, imgsz
        self.rescale_factor = rescale_factor
        cfg = getattr(model, "config", None)
        if focal_length is None:
            focal_length = getattr(cfg, "focal_length", postprocess.FOCAL_LENGTH)
        self.focal_length = float(focal_length)
        self.focal_length_px = focal_length_px
        self.patch_size = int(getattr(cfg, "image_size", preprocess.PATCH_SIZE))
        self.info = dict(info or {})
        self.last_timings: dict[str, float] = {}

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        source: str | Path | None = None,
        *,
        mano_path: str | Path | None = None,
        dtype: str | None = None,
        quantize=None,
        revision: str | None = None,
        detector: bool = True,
        **settings,
    ) -> "HandPosePipeline":
        """mlx_hands.hub.load(source, ...): a converted folder, a folder of the original files, the predecessor
        project's file or a Hub repository (default warmshao/WiLoR-mini). detector=False loads WiLoR only.

        settings go to the constructor (conf, iou, max_det, imgsz, rescale_factor, focal_length, focal_length_px).
        """
        loaded = load(source, mano_path=mano_path, dtype=dtype, quantize=quantize, revision=revision,
                      detector=detector)
        return cls(loaded.wilor, loaded.detector, info=loaded.info, **settings)

    @property
    def device(self) -> str:
        """The MLX device the networks run on, e.g. 'gpu (NVIDIA H200)' or 'cpu'."""
        return device_name()

    def settings_dict(self) -> dict:
        """The settings recorded in result files."""
        return {"conf": self.conf, "iou": self.iou, "max_det": self.max_det, "rescale_factor": self.rescale_factor,
                "focal_length_crop": self.focal_length, "focal_length_px": self.focal_length_px}

    # ---------------------------------------------------------------- public API
    def __call__(
        self,
        image: np.ndarray | str | Path,
        *,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        rescale_factor: float | None = None,
        focal_length_px: float | None = None,
        K: np.ndarray | None = None,
        include_vertices: bool = True,
    ) -> list[Hand]:
        """Detect every hand in an image (path or (H, W, 3) RGB uint8 array; see images.py) -> Hands, best first."""
        return self.predict_many([image], conf=conf, iou=iou, max_det=max_det, rescale_factor=rescale_factor,
                                 focal_length_px=focal_length_px, K=K, include_vertices=include_vertices)[0]

    def predict_many(
        self,
        images,
        *,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        rescale_factor: float | None = None,
        focal_length_px: float | None = None,
        K: np.ndarray | None = None,
        include_vertices: bool = True,
    ) -> list[list[Hand]]:
        """Several images (paths or RGB uint8 arrays): the detector on each, then ONE WiLoR forward for the hands of
        all of them -> one list of Hands per image, the same as calling the pipeline on each image."""
        if self.detector is None:
            raise ValueError("this pipeline has no hand detector; pass boxes with predict_with_boxes()")
        frames = []
        for image in images:
            timings = {}
            t = time.perf_counter()
            img = load_image(image)
            timings["load"] = time.perf_counter() - t
            t = time.perf_counter()
            det = self.detect(img, conf=conf, iou=iou, max_det=max_det)
            timings["detect"] = time.perf_counter() - t
            boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
            is_right = np.asarray(det.classes).reshape(-1) == 1  # detector classes: 0 = left, 1 = right
            scores = np.asarray(det.scores, dtype=np.float32).reshape(-1)
            kps = np.asarray(det.keypoints)
            # a box clipped to a sliver at the image edge can round to zero width; it has no crop
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if not keep.all():
                log.debug("dropping %d zero-size detections", int((~keep).sum()))
                boxes, is_right, scores, kps = boxes[keep], is_right[keep], scores[keep], kps[keep]
            frames.append(self._frame(img, boxes, is_right, scores, kps, timings, focal_length_px, K))
        return self._run(frames, rescale_factor, include_vertices)

    def predict_with_boxes(
        self,
        image: np.ndarray | str | Path,
        boxes,
        is_right,
        *,
        confidence=None,
        rescale_factor: float | None = None,
        focal_length_px: float | None = None,
        K: np.ndarray | None = None,
        include_vertices: bool = True,
    ) -> list[Hand]:
        """Run WiLoR on caller-given boxes (N, 4) xyxy pixels with is_right (N,) (bool or 0 = left / 1 = right)."""
        frame = self._boxed_frame(image, "image", boxes, is_right, confidence, focal_length_px, K)
        return self._run([frame], rescale_factor, include_vertices)[0]

    def predict_many_with_boxes(
        self,
        images,
        boxes,
        is_right,
        *,
        confidence=None,
        rescale_factor: float | None = None,
        focal_length_px: float | None = None,
        K: np.ndarray | None = None,
        include_vertices: bool = True,
    ) -> list[list[Hand]]:
        """predict_with_boxes for several images in ONE WiLoR forward: boxes[i], is_right[i] (and confidence[i])
        belong to images[i] -> one list of Hands per image, the same as predict_with_boxes on each (a server
        batching its clients' tracked boxes)."""
        n = len(images)
        if len(boxes) != n or len(is_right) != n or (confidence is not None and len(confidence) != n):
            raise ValueError(f"give one boxes, is_right (and confidence) entry per image: {n} images, {len(boxes)} "
                             f"boxes, {len(is_right)} is_right" + ("" if confidence is None else
                                                                 f", {len(confidence)} confidence"))
        frames = [self._boxed_frame(image, f"images[{i}]", boxes[i], is_right[i],
                                    None if confidence is None else confidence[i], focal_length_px, K)
                  for i, image in enumerate(images)]
        return self._run(frames, rescale_factor, include_vertices)

    def _boxed_frame(self, image, name, boxes, is_right, confidence, focal_length_px, K) -> _Frame:
        """One image with caller-given boxes, loaded and checked, ready for _run (no detector)."""
        t = time.perf_counter()
        img = load_image(image, name)
        timings = {"load": time.perf_counter() - t, "detect": 0.0}
        b, r, c = validate_boxes(boxes, is_right, img.shape[1::-1], confidence)
        return self._frame(img, b, r, c, None, timings, focal_length_px, K)

    def detect(self, image: np.ndarray, *, conf=None, iou=None, max_det=None):
        """Run the hand detector on an (H, W, 3) RGB uint8 image -> Detections (see detection.py)."""
        if self.detector is None:
            raise ValueError("this pipeline has no hand detector")
        cfg = getattr(self.detector, "config", None)
        return detect(
            self._detector_fn,
            image,
            imgsz=self.imgsz or getattr(cfg, "imgsz", 640),
            conf=self.conf if conf is None else conf,
            iou=self.iou if iou is None else iou,
            max_det=self.max_det if max_det is None else max_det,
            kpt_shape=tuple(getattr(cfg, "kpt_shape", (21, 3))),
            uint8_input=True,
        )

    def detector_fn(self):
        """The detector as a numpy -> numpy function (letterboxed uint8 (1, h, w, 3) -> decoded head output),
        as pipeline.detection.detect and pipeline.calibration take it."""
        return self._detector_fn

    def faces(self, is_right: bool = True) -> np.ndarray:
        """MANO triangles (F, 3) for one hand side; left hands need the reversed winding (mirrored mesh)."""
        return oriented_faces(np.asarray(self.model.faces), is_right)

    # ---------------------------------------------------------------- internals
    def _detector_fn(self, batch: np.ndarray) -> np.ndarray:
        return as_numpy(self.detector)(batch)  # float32, through the pinned buffer on CUDA

    def _frame(self, img, boxes, is_right, confidence, kps, timings, focal_length_px, K) -> _Frame:
        H, W = img.shape[:2]
        camera = postprocess.camera_intrinsics(
            (W, H),
            focal_length=self.focal_length,
            focal_length_px=self.focal_length_px if focal_length_px is None and K is None else focal_length_px,
            K=K,
            patch_size=self.patch_size,
        )
        # the network's own focal F (crop pixels) follows the full-image camera: F = f * 256 / max(W, H)
        user_camera = K is not None or focal_length_px is not None or self.focal_length_px is not None
        F = (camera.fx + camera.fy) / 2 * self.patch_size / max(W, H) if user_camera else self.focal_length
        return _Frame(img, boxes, is_right, confidence, kps, camera, F, timings)

    def _run(self, frames: list[_Frame], rescale_factor, include_vertices) -> list[list[Hand]]:
        r = self.rescale_factor if rescale_factor is None else rescale_factor
        for f in frames:
            t = time.perf_counter()
            if len(f.boxes):
                f.crops, f.centers, f.sizes = preprocess.crop_hands(f.image, f.boxes, f.is_right, r, self.patch_size)
            f.timings["crop"] = time.perf_counter() - t
        with_hands = [f for f in frames if len(f.boxes)]
        out, model_s = {}, 0.0
        if with_hands:
            t = time.perf_counter()
            out = self._forward(with_hands, include_vertices)
            model_s = time.perf_counter() - t
        results, start = [], 0
        for f in frames:
            n = len(f.boxes)
            f.timings["model"] = 0.0
            t = time.perf_counter()
            hands = []
            if n:
                o = {k: v[start : start + n] for k, v in out.items()}
                start += n
                hands = postprocess.make_hands(
                    boxes=f.boxes, is_right=f.is_right, confidence=f.confidence, centers=f.centers, sizes=f.sizes,
                    image_wh=f.image.shape[1::-1], camera=f.camera, cam=o["cam"], keypoints_3d=o["keypoints_3d"],
                    global_orient=o["global_orient"], hand_pose=o["hand_pose"], betas=o["betas"],
                    vertices=o.get("vertices"),
                    detector_keypoints=None if f.keypoints is None else np.asarray(f.keypoints),
                )
            f.timings["post"] = time.perf_counter() - t
            results.append(hands)
        # per stage, summed over the images (one image: its own); the one model call counted once
        totals = {k: sum(f.timings[k] for f in frames) for k in ("load", "detect", "crop")}
        totals.update(model=model_s, post=sum(f.timings["post"] for f in frames))
        totals["total"] = sum(totals.values())
        self.last_timings = totals
        return results

    def _forward(self, frames: list[_Frame], include_vertices: bool) -> dict[str, np.ndarray]:
        """One WiLoR call for every crop of `frames` -> numpy outputs, checked to be finite."""
        crops = frames[0].crops if len(frames) == 1 else np.concatenate([f.crops for f in frames])
        Fs = [f.F for f in frames]
        F = Fs[0] if len(set(Fs)) == 1 else mx.array(np.repeat(Fs, [len(f.boxes) for f in frames]), mx.float32)
        # only the columns the network reads travel to the device
        out = self.model(to_device(self.model.input_window(crops)), focal_length=F)
        names = [*_OUTPUTS, "vertices"] if include_vertices else list(_OUTPUTS)
        o = from_device({n: getattr(out, n) for n in names})  # one device -> host copy
        bad = sorted(k for k, v in o.items() if not np.isfinite(v).all())
        if bad:
            raise ValueError(f"the model produced NaN or infinite values ({', '.join(bad)}) for a finite input: its "
                             f"weights are damaged or incompatible; convert the original files again")
        return o
