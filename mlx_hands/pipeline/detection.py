"""Hand detection around the YOLOv8-pose network: letterbox, NMS and rescaling, numpy/OpenCV only.

Reproduces what `ultralytics.YOLO('detector.pt')(image, conf=0.3)` does in WiLoR (ultralytics 8.1.34):

- `engine/predictor.py`: a single image gets `LetterBox(imgsz, auto=True, stride=32)` (auto is
  `same_shapes and model.pt`, true for one image and a .pt model), channels BGR -> RGB, /255, float32.
  imgsz is the checkpoint's training imgsz (`Model._reset_ckpt_args` keeps it), rounded up to a
  multiple of 32 (`check_imgsz`).
- `data/augment.py` LetterBox: scale r = min(new_h / h, new_w / w) (upscaling allowed), resize to
  (round(w r), round(h r)) with cv2.INTER_LINEAR, pad each side with 114 to a multiple of the
  stride (auto) or to new_shape, split as round(d/2 - 0.1) before / round(d/2 + 0.1) after.
- `utils/ops.py` non_max_suppression: candidates max class score > conf, best class only, at most
  30000 by score, class-aware greedy NMS (boxes offset by class * 7680, torchvision.ops.nms:
  suppress IoU > iou), first max_det kept, in descending score order.
- `models/yolo/pose/predict.py`: boxes -> `scale_boxes` (integer pad, clip to the image) then
  rounded to whole pixels; keypoints -> `scale_coords` (fractional pad, x and y clipped).

Our images are RGB (ultralytics takes BGR numpy and flips it): the network sees the same RGB input.
Not reproduced: ultralytics' NMS wall-clock time limit (2 s + 0.05 s per image), which only
truncates results on pathologically slow machines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from ..config import CONF, IOU, MAX_DET

MAX_NMS = 30000  # ultralytics: boxes fed to NMS at most
MAX_WH = 7680  # ultralytics: per-class box offset for class-aware NMS
PAD_VALUE = 114
STRIDE = 32


@dataclass
class Detections:
    """Hands found in one image, best score first. Pixels of the original image."""

    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2, rounded to whole pixels like ultralytics
    scores: np.ndarray  # (N,) float32 class confidence
    classes: np.ndarray  # (N,) int64: 0 = left, 1 = right
    keypoints: np.ndarray  # (N, K, 3) float32 x, y pixels and visibility (K, 2 if the model has no visibility)

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def is_right(self) -> np.ndarray:
        return self.classes == 1


def check_imgsz(imgsz: int | tuple[int, int], stride: int = STRIDE) -> tuple[int, int]:
    """imgsz (int or (h, w)) -> (h, w) rounded up to multiples of stride, as ultralytics check_imgsz."""
    sz = (imgsz, imgsz) if isinstance(imgsz, (int, np.integer)) else tuple(imgsz)
    if len(sz) != 2 or any(int(s) != s or s <= 0 for s in sz):
        raise ValueError(f"imgsz must be a positive int or (h, w) of ints, got {imgsz!r}")
    return tuple(int(math.ceil(s / stride) * stride) for s in sz)


def letterbox(
    image: np.ndarray,
    new_shape: int | tuple[int, int],
    auto: bool = True,
    stride: int = STRIDE,
    *,
    scaleup: bool = True,
    pad_value: int = PAD_VALUE,
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping aspect, then pad (ultralytics LetterBox, centred).

    image (H, W, C) -> (img (h, w, C) same dtype, ratio r, pad (left, top) in pixels), so that an
    input pixel x maps to x * r + left. auto=True pads only to a multiple of stride per axis.
    """
    if image.ndim != 3:
        raise ValueError(f"letterbox expects an (H, W, C) image, got shape {image.shape}")
    nh, nw = (new_shape, new_shape) if isinstance(new_shape, (int, np.integer)) else new_shape
    image = np.ascontiguousarray(image)  # cv2 wants positive strides (e.g. after bgr[..., ::-1])
    h, w = image.shape[:2]
    r = min(nh / h, nw / w)
    if not scaleup:
        r = min(r, 1.0)
    uw, uh = int(round(w * r)), int(round(h * r))
    dw, dh = nw - uw, nh - uh
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (w, h) != (uw, uh):
        image = cv2.resize(image, (uw, uh), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    value = (pad_value,) * image.shape[2]
    out = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=value)
    if out.ndim == 2:  # cv2 drops a single channel axis
        out = out[..., None]
    return out, r, (left, top)


def xywh2xyxy(x: np.ndarray) -> np.ndarray:
    y = np.empty_like(x)
    dw, dh = x[..., 2] / 2, x[..., 3] / 2
    y[..., 0] = x[..., 0] - dw
    y[..., 1] = x[..., 1] - dh
    y[..., 2] = x[..., 0] + dw
    y[..., 3] = x[..., 1] + dh
    return y


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS as torchvision.ops.nms: indices kept, by descending score; a box is dropped when its
    IoU with a kept, higher-scored box is > iou. boxes (N, 4) xyxy, arithmetic in the boxes' dtype.
    Stopping after max_keep kept boxes gives the same first max_keep as the full greedy pass."""
    order = np.argsort(-scores, kind="stable")
    if max_keep is not None and max_keep <= 0:
        return order[:0].astype(np.int64)
    b = boxes[order]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        j = np.arange(i + 1, len(order))
        j = j[~suppressed[j]]
        if not len(j):
            break
        w = np.maximum(np.minimum(x2[i], x2[j]) - np.maximum(x1[i], x1[j]), 0)
        h = np.maximum(np.minimum(y2[i], y2[j]) - np.maximum(y1[i], y1[j]), 0)
        inter = w * h
        overlap = inter / (area[i] + area[j] - inter)
        suppressed[j[overlap.astype(np.float64) > iou]] = True  # C++: float IoU > double threshold
    return order[np.asarray(keep, dtype=np.int64)]


def non_max_suppression(
    raw: np.ndarray,
    conf: float = CONF,
    iou: float = IOU,
    *,
    nc: int,
    classes=None,
    agnostic: bool = False,
    max_det: int = MAX_DET,
    max_nms: int = MAX_NMS,
) -> list[np.ndarray]:
    """raw (B, 4 + nc + M, A) decoded head output (xywh, class scores, M extra) ->
    per image (N, 6 + M): x1, y1, x2, y2, score, class, extra; ultralytics semantics (single label)."""
    if not 0 <= conf <= 1 or not 0 <= iou <= 1:
        raise ValueError(f"conf and iou must be in [0, 1], got conf={conf}, iou={iou}")
    raw = np.asarray(raw)
    if raw.ndim != 3 or raw.shape[1] < 4 + nc:
        raise ValueError(f"raw detector output must be (B, 4 + {nc} + M, A), got shape {raw.shape}")
    out = []
    for x in raw.transpose(0, 2, 1):
        x = x[x[:, 4 : 4 + nc].max(axis=1) > conf]
        box, cls, extra = xywh2xyxy(x[:, :4]), x[:, 4 : 4 + nc], x[:, 4 + nc :]
        j = cls.argmax(axis=1)
        score = cls[np.arange(len(j)), j]
        keep = score > conf
        x = np.concatenate([box, score[:, None], j[:, None].astype(x.dtype), extra], axis=1)[keep]
        if classes is not None:
            x = x[np.isin(x[:, 5], np.asarray(classes, dtype=x.dtype))]
        if len(x) > max_nms:
            x = x[np.argsort(-x[:, 4], kind="stable")[:max_nms]]
        offset = x[:, 5:6] * (0 if agnostic else MAX_WH)  # boxes of different classes never overlap
        i = nms(x[:, :4] + offset, x[:, 4], iou, max_keep=max_det)
        out.append(x[i])
    return out


def scale_boxes(img1_shape, boxes: np.ndarray, img0_shape) -> np.ndarray:
    """xyxy boxes in the letterboxed image (h1, w1) -> original image (h0, w0), clipped (ultralytics)."""
    gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
    pad_x = round((img1_shape[1] - img0_shape[1] * gain) / 2 - 0.1)
    pad_y = round((img1_shape[0] - img0_shape[0] * gain) / 2 - 0.1)
    boxes = boxes.copy()
    boxes[..., [0, 2]] -= pad_x
    boxes[..., [1, 3]] -= pad_y
    boxes[..., :4] /= gain
    boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, img0_shape[1])
    boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, img0_shape[0])
    return boxes


def scale_coords(img1_shape, coords: np.ndarray, img0_shape) -> np.ndarray:
    """(..., 2+) x, y in the letterboxed image -> original image, clipped; other columns untouched.
    ultralytics uses the fractional padding here (boxes use the integer one)."""
    gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
    pad_x = (img1_shape[1] - img0_shape[1] * gain) / 2
    pad_y = (img1_shape[0] - img0_shape[0] * gain) / 2
    coords = coords.copy()
    coords[..., 0] = ((coords[..., 0] - pad_x) / gain).clip(0, img0_shape[1])
    coords[..., 1] = ((coords[..., 1] - pad_y) / gain).clip(0, img0_shape[0])
    return coords


def postprocess(
    raw: np.ndarray,
    input_hw: tuple[int, int],
    orig_hw: tuple[int, int] | list[tuple[int, int]],
    *,
    conf: float = CONF,
    iou: float = IOU,
    max_det: int = MAX_DET,
    classes=None,
    kpt_shape: tuple[int, int] = (21, 3),
) -> list[Detections]:
    """Decoded head output (B, 4 + nc + K*D, A) for letterboxed inputs of size input_hw ->
    one Detections per image in original pixels. orig_hw: one (h, w) for all, or one per image."""
    raw = np.asarray(raw, dtype=np.float32)
    nk = kpt_shape[0] * kpt_shape[1]
    nc = raw.shape[1] - 4 - nk if raw.ndim == 3 else 0
    if raw.ndim != 3 or nc < 1:
        raise ValueError(f"raw detector output must be (B, 4 + nc + {nk}, A) for kpt_shape {kpt_shape}, got {raw.shape}")
    shapes = [tuple(orig_hw)] * len(raw) if np.ndim(orig_hw[0]) == 0 else [tuple(s) for s in orig_hw]
    if len(shapes) != len(raw):
        raise ValueError(f"orig_hw has {len(shapes)} shapes for a batch of {len(raw)}")
    results = []
    for pred, shape in zip(non_max_suppression(raw, conf, iou, nc=nc, classes=classes, max_det=max_det), shapes):
        boxes = np.round(scale_boxes(input_hw, pred[:, :4], shape))
        kpts = scale_coords(input_hw, pred[:, 6:].reshape(len(pred), *kpt_shape), shape)
        results.append(
            Detections(
                boxes=boxes.astype(np.float32),
                scores=pred[:, 4].astype(np.float32),
                classes=pred[:, 5].astype(np.int64),
                keypoints=kpts.astype(np.float32),
            )
        )
    return results


def preprocess(image_rgb: np.ndarray, imgsz: int | tuple[int, int], *, auto: bool = True, stride: int = STRIDE,
               scale: bool = True) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> network input (1, h, w, 3) float32 in [0, 1], letterboxed with 114.

    scale=False: the letterboxed uint8 pixels, for a model that divides by 255 itself (a quarter of the
    bytes to move to a GPU)."""
    if not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        got = f"{image_rgb.dtype} array of shape {image_rgb.shape}" if isinstance(image_rgb, np.ndarray) else type(image_rgb).__name__
        raise ValueError(f"image must be an (H, W, 3) RGB uint8 array, got {got}")
    if min(image_rgb.shape[:2]) < 1:
        raise ValueError(f"image is empty: shape {image_rgb.shape}")
    img, _, _ = letterbox(image_rgb, check_imgsz(imgsz, stride), auto=auto, stride=stride)
    if not scale:
        return np.ascontiguousarray(img)[None]
    return (img.astype(np.float32) / np.float32(255))[None]


def detect(
    model_fn: Callable[[np.ndarray], np.ndarray],
    image_rgb: np.ndarray,
    *,
    imgsz: int | tuple[int, int] = 640,
    conf: float = CONF,
    iou: float = IOU,
    max_det: int = MAX_DET,
    classes=None,
    auto: bool = True,
    kpt_shape: tuple[int, int] = (21, 3),
    uint8_input: bool = False,
) -> Detections:
    """Detect hands in one (H, W, 3) RGB uint8 image, as ultralytics' predictor does for one image.

    model_fn maps the float32 NHWC batch (1, h, w, 3) (RGB in [0, 1], h and w multiples of 32) to the
    decoded head output (1, 4 + nc + K*D, A) as numpy; with uint8_input=True it receives the uint8
    pixels (0..255) instead and divides by 255 itself (YOLOPose does).
    """
    x = preprocess(image_rgb, imgsz, auto=auto, scale=not uint8_input)
    raw = np.asarray(model_fn(x))
    return postprocess(
        raw, x.shape[1:3], image_rgb.shape[:2], conf=conf, iou=iou, max_det=max_det, classes=classes, kpt_shape=kpt_shape
    )[0]
