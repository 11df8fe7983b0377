"""HandPosePipeline: image -> detector -> crops -> WiLoR (one batched call) -> Hand records.

The one module of pipeline/ that touches MLX: numpy arrays go in to the networks as mx.array and come back
as numpy right after. Everything around it (pre/post-processing, detection decoding, NMS) is numpy/OpenCV.

    pipe = HandPosePipeline.from_pretrained("path/or/hub-repo")
    hands = pipe("photo.jpg")                        # or an (H, W, 3) RGB uint8 array
    hands = pipe.predict_with_boxes(rgb, boxes, is_right)
    pipe.last_timings                                # seconds per stage of the last call
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from . import postprocess, preprocess
from ..models.transfer import from_device, to_device
from .images import load_image
from .types import Hand

log = logging.getLogger(__name__)

DEFAULT_CONF = 0.3
DEFAULT_IOU = 0.7
DEFAULT_MAX_DET = 300


def _to_numpy(tree):
    """mx.array (or nested tuples/lists/dicts of them) -> numpy, float32 for any float dtype."""
    if isinstance(tree, mx.array):
        if mx.issubdtype(tree.dtype, mx.floating) and tree.dtype != mx.float32:
            tree = tree.astype(mx.float32)  # numpy has no bfloat16
        return np.array(tree)
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_numpy(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return tree


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
    for i, (x1, y1, x2, y2) in enumerate(b):
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"box {i} {[x1, y1, x2, y2]} has zero or negative size (expected x1 < x2, y1 < y2)")
        if x2 <= 0 or y2 <= 0 or x1 >= W or y1 >= H:
            raise ValueError(f"box {i} {[x1, y1, x2, y2]} lies outside the {W}x{H} image")
    if confidence is None:
        c = np.ones(len(b), np.float32)
    else:
        c = np.asarray(confidence, dtype=np.float32).reshape(-1)
        if c.size == 1:
            c = np.repeat(c, len(b))
        if len(c) != len(b):
            raise ValueError(f"confidence must have one entry per box: {len(b)} boxes, {len(c)} values")
    return b, r.astype(bool), c


class HandPosePipeline:
    """Detector + WiLoR around numpy images.

    model: a WiLoR model (`model(crops mx (B, 256, 256, 3) RGB 0..255) -> WiLoROutput`, `model.faces`).
    detector: the YOLOv8-pose hand detector (`detector(mx (1, h, w, 3) uint8 letterboxed RGB) -> decoded head
        output`), or None: then only predict_with_boxes works.
    conf, iou, max_det, imgsz: detector settings (WiLoR's demo: 0.3, ultralytics' 0.7 and 300; imgsz None = the
        detector config's). rescale_factor: crop side / max box side (2.5 as WiLoR-mini; the original demo 2.0).
    focal_length: the crop camera's F in WiLoR units (default: the model config's, 5000); focal_length_px: a
        real focal length in pixels of the input images instead. See postprocess for the camera conventions.
    """

    def __init__(
        self,
        model,
        detector=None,
        *,
        conf: float = DEFAULT_CONF,
        iou: float = DEFAULT_IOU,
        max_det: int = DEFAULT_MAX_DET,
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
        path_or_repo: str | Path | None = None,
        *,
        mano_path: str | Path | None = None,
        dtype: str | None = None,
        revision: str | None = None,
        detector: bool = True,
        **settings,
    ) -> "HandPosePipeline":
        """Load WiLoR and the hand detector from a converted directory, a folder of the original files or a
        Hub repository (default warmshao/WiLoR-mini; see mlx_hands.hub). detector=False loads WiLoR only.

        settings go to the constructor (conf, iou, max_det, imgsz, rescale_factor, focal_length, focal_length_px).
        """
        from ..hub import resolve
        from ..models.wilor import WiLoR
        from ..weights import load_detector

        local = Path(resolve(path_or_repo, revision=revision, detector=detector))
        model = WiLoR.from_pretrained(local, mano_path=mano_path, dtype=dtype)
        det = load_detector(local, dtype=dtype) if detector else None
        if detector and det is None:
            log.warning("%s holds no hand detector: only predict_with_boxes will work", local)
        info = _model_info(path_or_repo, local, model, dtype)
        return cls(model, det, info=info, **settings)

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
        if self.detector is None:
            raise ValueError("this pipeline has no hand detector; pass boxes with predict_with_boxes()")
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
        return self._run(img, boxes, is_right, scores, kps, timings, rescale_factor, focal_length_px, K,
                         include_vertices)

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
        timings = {}
        t = time.perf_counter()
        img = load_image(image)
        timings["load"] = time.perf_counter() - t
        timings["detect"] = 0.0
        H, W = img.shape[:2]
        b, r, c = validate_boxes(boxes, is_right, (W, H), confidence)
        return self._run(img, b, r, c, None, timings, rescale_factor, focal_length_px, K, include_vertices)

    def predict_many(
        self,
        images,
        *,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        rescale_factor: float | None = None,
        focal_length_px: float | None = None,
        include_vertices: bool = True,
    ) -> list[list[Hand]]:
        """Several images (paths or RGB uint8 arrays) -> one list of Hands per image, as pipe(image) gives for
        each: the detector runs per image, then WiLoR once on the crops of all images (one batch).
        last_timings holds the stage totals over the images."""
        if self.detector is None:
            raise ValueError("this pipeline has no hand detector; pass boxes with predict_with_boxes()")
        timings = dict.fromkeys(("load", "detect", "crop", "model", "post"), 0.0)
        r = self.rescale_factor if rescale_factor is None else rescale_factor
        f_px = self.focal_length_px if focal_length_px is None else focal_length_px
        jobs = []  # per image: (size, camera, detections, centres, sizes, crops, F)
        for image in images:
            t = time.perf_counter()
            img = load_image(image)
            t1 = time.perf_counter()
            det = self.detect(img, conf=conf, iou=iou, max_det=max_det)
            t2 = time.perf_counter()
            boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # as __call__: no zero-size crops
            is_right = (np.asarray(det.classes).reshape(-1) == 1)[keep]
            found = (boxes[keep], is_right, np.asarray(det.scores, np.float32).reshape(-1)[keep],
                     np.asarray(det.keypoints)[keep])
            H, W = img.shape[:2]
            camera = postprocess.camera_intrinsics((W, H), focal_length=self.focal_length, focal_length_px=f_px,
                                                   patch_size=self.patch_size)
            F = (camera.fx + camera.fy) / 2 * self.patch_size / max(W, H) if f_px is not None else self.focal_length
            crops, centers, sizes = preprocess.crop_hands(img, found[0], is_right, r, self.patch_size)
            jobs.append(((W, H), camera, found, centers, sizes, crops, F))
            timings["load"] += t1 - t
            timings["detect"] += t2 - t1
            timings["crop"] += time.perf_counter() - t2
        counts = [len(j[2][0]) for j in jobs]
        results: list[list[Hand]] = [[] for _ in jobs]
        if sum(counts):
            t = time.perf_counter()
            crops = np.concatenate([j[5] for j in jobs if len(j[5])])
            Fs = np.repeat([j[6] for j in jobs], counts).astype(np.float32)
            F = float(Fs[0]) if np.all(Fs == Fs[0]) else mx.array(Fs)
            out = self.model(to_device(self.model.input_window(crops)), focal_length=F)
            names = ["cam", "keypoints_3d", "global_orient", "hand_pose", "betas"] + ["vertices"] * include_vertices
            o = from_device({n: getattr(out, n) for n in names})
            timings["model"] = time.perf_counter() - t
            t = time.perf_counter()
            start = 0
            for i, ((W, H), camera, (boxes, is_right, scores, kps), centers, sizes, _, _) in enumerate(jobs):
                s = slice(start, start + counts[i])
                start += counts[i]
                if counts[i]:
                    results[i] = postprocess.make_hands(
                        boxes=boxes, is_right=is_right, confidence=scores, centers=centers, sizes=sizes,
                        image_wh=(W, H), camera=camera, cam=o["cam"][s], keypoints_3d=o["keypoints_3d"][s],
                        global_orient=o["global_orient"][s], hand_pose=o["hand_pose"][s], betas=o["betas"][s],
                        vertices=o["vertices"][s] if include_vertices else None, detector_keypoints=kps)
            timings["post"] = time.perf_counter() - t
        timings["total"] = sum(timings.values())
        self.last_timings = timings
        return results

    def detect(self, image: np.ndarray, *, conf=None, iou=None, max_det=None):
        """Run the hand detector on an (H, W, 3) RGB uint8 image -> Detections (see detection.py)."""
        from .detection import detect

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

    def faces(self, is_right: bool = True) -> np.ndarray:
        """MANO triangles (F, 3) for one hand side; left hands need the reversed winding (mirrored mesh)."""
        f = np.asarray(self.model.faces)
        return f if is_right else f[:, ::-1].copy()

    # ---------------------------------------------------------------- internals
    def _detector_fn(self, batch: np.ndarray):
        out = self.detector(to_device(batch))
        if isinstance(out, mx.array) and mx.issubdtype(out.dtype, mx.floating):
            return from_device({"out": out})["out"]  # float32, through the pinned buffer on CUDA
        mx.eval(out)
        return _to_numpy(out)

    def _run(self, img, boxes, is_right, confidence, det_kps, timings, rescale_factor, focal_length_px, K,
             include_vertices):
        H, W = img.shape[:2]
        camera = postprocess.camera_intrinsics(
            (W, H),
            focal_length=self.focal_length,
            focal_length_px=self.focal_length_px if focal_length_px is None and K is None else focal_length_px,
            K=K,
            patch_size=self.patch_size,
        )
        hands: list[Hand] = []
        if len(boxes):
            t = time.perf_counter()
            r = self.rescale_factor if rescale_factor is None else rescale_factor
            crops, centers, sizes = preprocess.crop_hands(img, boxes, is_right, r, self.patch_size)
            timings["crop"] = time.perf_counter() - t

            t = time.perf_counter()
            # the network's own focal F (crop pixels) follows the full-image camera: F = f * 256 / max(W, H)
            user_camera = K is not None or focal_length_px is not None or self.focal_length_px is not None
            F = (camera.fx + camera.fy) / 2 * self.patch_size / max(W, H) if user_camera else self.focal_length
            # every hand of the frame in one batch; only the columns the network reads travel to the device
            out = self.model(to_device(self.model.input_window(crops)), focal_length=F)
            names = ["cam", "keypoints_3d", "global_orient", "hand_pose", "betas"]
            if include_vertices:
                names.append("vertices")
            o = from_device({n: getattr(out, n) for n in names})  # one device -> host copy
            timings["model"] = time.perf_counter() - t

            t = time.perf_counter()
            hands = postprocess.make_hands(
                boxes=boxes,
                is_right=is_right,
                confidence=confidence,
                centers=centers,
                sizes=sizes,
                image_wh=(W, H),
                camera=camera,
                cam=o["cam"],
                keypoints_3d=o["keypoints_3d"],
                global_orient=o["global_orient"],
                hand_pose=o["hand_pose"],
                betas=o["betas"],
                vertices=o.get("vertices"),
                detector_keypoints=None if det_kps is None else np.asarray(det_kps),
            )
            timings["post"] = time.perf_counter() - t
        else:
            timings.update(crop=0.0, model=0.0, post=0.0)
        timings["total"] = sum(timings.values())
        self.last_timings = timings
        return hands


def _model_info(path_or_repo, local: Path | None, model, dtype) -> dict[str, Any]:
    """Identity of the loaded weights for result files: what was asked, where it was found, revision, size."""
    info: dict[str, Any] = {"model": None if path_or_repo is None else str(path_or_repo)}
    if local is not None:
        info["path"] = str(local.resolve())
        parts = local.resolve().parts
        if "snapshots" in parts and parts.index("snapshots") + 1 < len(parts):  # huggingface_hub cache layout
            info["revision"] = parts[parts.index("snapshots") + 1]
        f = local / "model.safetensors"
        if f.is_file():
            info["model_bytes"] = f.stat().st_size
        try:
            src = json.loads((local / "config.json").read_text()).get("source")
            if src:
                info["source"] = src
        except (OSError, ValueError):
            pass
    model_dtype = getattr(model, "dtype", None)
    info["dtype"] = dtype or (str(model_dtype).replace("mlx.core.", "") if model_dtype is not None else None)
    return info
