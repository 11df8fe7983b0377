"""Hand crops for WiLoR: square box around each detection, anti-alias blur, left-hand mirror, affine warp.

Follows WiLoR-mini `predict_with_bboxes` + `utils.generate_image_patch_cv2` (and the original WiLoR
`ViTDetDataset`), pixel for pixel:

1. centre c = box centre; side b = rescale_factor * max(box w, box h) (square, no aspect expansion);
2. if d = b / patch / 2 > 1.1, Gaussian blur with sigma = (d - 1) / 2, as skimage.filters.gaussian(
   channel_axis=2, preserve_range=True) does it (scipy.ndimage: radius int(4 sigma + 0.5), 'nearest' border,
   no rounding of the result);
3. left hands (is_right == 0) are cut from the horizontally mirrored image around cx' = W - cx - 1, so that
   WiLoR, which only knows right hands, sees a right hand;
4. bilinear warp (cv2.INTER_LINEAR, black constant border) with the 3-point getAffineTransform the reference
   builds: c -> (P/2, P/2), c + (0, b/2) -> (P/2, P), c + (b/2, 0) -> (P, P/2).

Unlike the reference, which copies (and, for large boxes, blurs in float64) the whole frame for every hand,
each hand here reads only the part of the frame its warp touches, plus the blur radius: the values are the
same because the warp never reads outside that region and the blur of a pixel only reads within its radius.
The mirror is applied to that region only.

The crop keeps the input's channel order. The pipeline's images are RGB and the network is fed RGB, which is
what WiLoR was trained on: WiLoR-mini receives BGR crops and reverses the channels inside its forward, the
original demo converts its BGR crops to RGB in ViTDetDataset.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..config import CROP_SIZE as PATCH_SIZE
from ..config import RESCALE_FACTOR
BLUR_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter default, used by skimage.filters.gaussian
_WARP_MARGIN = 2  # px read around the warp footprint: bilinear neighbour + fixed-point rounding of coordinates


def crop_boxes(boxes: np.ndarray, rescale_factor: float = RESCALE_FACTOR) -> tuple[np.ndarray, np.ndarray]:
    """boxes (N, 4) xyxy pixels -> centres (N, 2) and square sides (N,), float64 pixels."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centers = (boxes[:, 0:2] + boxes[:, 2:4]) / 2.0
    sizes = rescale_factor * (boxes[:, 2:4] - boxes[:, 0:2]).max(axis=1)
    return centers, sizes


def blur_sigma(size: float, patch_size: int = PATCH_SIZE) -> float:
    """Anti-alias sigma for a crop of side `size` px resampled to `patch_size`; 0.0 means no blur."""
    d = size / patch_size / 2.0
    return (d - 1.0) / 2.0 if d > 1.1 else 0.0


def gaussian_kernel(sigma: float, truncate: float = BLUR_TRUNCATE) -> np.ndarray:
    """scipy.ndimage's 1D Gaussian: radius int(truncate * sigma + 0.5), normalised to sum 1. float64 (2r+1,)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 / (sigma * sigma) * x * x)
    return k / k.sum()


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Per-channel Gaussian blur of (H, W, C) with scipy 'nearest' borders (= OpenCV BORDER_REPLICATE).

    Equals skimage.filters.gaussian(image, sigma, channel_axis=2, preserve_range=True) up to float32
    rounding; returns float32 without rounding back to integers.
    """
    k = gaussian_kernel(sigma)
    src = np.ascontiguousarray(image)
    if src.dtype not in (np.uint8, np.float32):
        src = src.astype(np.float32)
    return cv2.sepFilter2D(src, cv2.CV_32F, k, k, borderType=cv2.BORDER_REPLICATE)  # float accumulation


def crop_transform(cx: float, cy: float, size: float, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """Forward 2x3 affine (source pixels -> crop pixels), built like the reference's gen_trans_from_patch_cv
    with scale 1 and no rotation: three float32 point pairs through cv2.getAffineTransform."""
    half = np.float32(size * 0.5)  # the reference rounds the half-extent to float32 before adding it
    cx, cy = float(cx), float(cy)
    src = np.array([[cx, cy], [cx, cy + float(half)], [cx + float(half), cy]], dtype=np.float64).astype(np.float32)
    p = patch_size * 0.5
    dst = np.array([[p, p], [p, p + p], [p + p, p]], dtype=np.float32)
    return cv2.getAffineTransform(src, dst)


def _footprint(inv: np.ndarray, patch_size: int) -> tuple[float, float, float, float]:
    """Source-pixel bounding rectangle (x_min, x_max, y_min, y_max) sampled by an inverse affine map."""
    e = patch_size - 1
    corners = np.array([[0, 0, 1], [e, 0, 1], [0, e, 1], [e, e, 1]], dtype=np.float64)
    pts = corners @ inv.T
    return pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].min(), pts[:, 1].max()


def crop_hand(
    image: np.ndarray, center: np.ndarray, size: float, is_right: bool, patch_size: int = PATCH_SIZE
) -> np.ndarray:
    """One crop (patch, patch, C) float32 in the image's value range; see the module docstring."""
    H, W, C = image.shape
    cx, cy = float(center[0]), float(center[1])
    flip = not bool(is_right)
    if flip:
        cx = W - cx - 1.0  # the centre in the mirrored image, as the reference does it
    inv = cv2.invertAffineTransform(crop_transform(cx, cy, size, patch_size))
    sigma = blur_sigma(size, patch_size)
    pad = _WARP_MARGIN + (int(BLUR_TRUNCATE * sigma + 0.5) if sigma > 0 else 0)

    # Region of the (mirrored, for left hands) image that the warp and the blur read.
    x_min, x_max, y_min, y_max = _footprint(inv, patch_size)
    x0 = max(int(math.floor(x_min)) - pad, 0)
    x1 = min(int(math.floor(x_max)) + 2 + pad, W)
    y0 = max(int(math.floor(y_min)) - pad, 0)
    y1 = min(int(math.floor(y_max)) + 2 + pad, H)
    if x0 >= x1 or y0 >= y1:  # the crop lies entirely outside the image: all border
        return np.zeros((patch_size, patch_size, C), np.float32)
    if flip:
        # columns [x0, x1) of the mirrored image are columns [W - x1, W - x0) of the image, reversed
        region = image[y0:y1, W - x1 : W - x0][:, ::-1]
    else:
        region = image[y0:y1, x0:x1]
    if sigma > 0:
        # The reference warps the float64 blurred frame; OpenCV's float64 warp samples at exact coordinates
        # where its uint8/float32 warps round them to 1/32 px, so warp in float64 too (a few grey levels apart
        # on textured images otherwise).
        region = gaussian_blur(region, sigma).astype(np.float64)
    else:
        region = np.ascontiguousarray(region)

    # Shift the inverse map into region coordinates; subtracting whole pixels keeps the sampling grid exact.
    inv_local = inv.copy()
    inv_local[0, 2] -= x0
    inv_local[1, 2] -= y0
    crop = cv2.warpAffine(
        region,
        inv_local,
        (patch_size, patch_size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    if crop.ndim == 2:  # OpenCV drops a single channel axis
        crop = crop[:, :, None]
    return crop.astype(np.float32, copy=False)


def crop_hands(
    image: np.ndarray,
    boxes: np.ndarray,
    is_right: np.ndarray,
    rescale_factor: float = RESCALE_FACTOR,
    patch_size: int = PATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut WiLoR's input crops.

    image (H, W, C) uint8 (or float) in the caller's channel order (RGB in this package); boxes (N, 4) xyxy
    pixels; is_right (N,) 0/1 or bool. Returns crops (N, patch, patch, C) float32 in 0..255 (bilinear values
    are rounded by OpenCV when no blur is applied, kept fractional when blurred, as in the reference),
    centres (N, 2) and square sides (N,) in image pixels (the unmirrored centre, as cam_crop_to_full wants).
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"crop_hands: image must be (H, W, C), got shape {image.shape}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    is_right = np.asarray(is_right).reshape(-1)
    if len(is_right) != len(boxes):
        raise ValueError(f"crop_hands: {len(boxes)} boxes but {len(is_right)} is_right flags")
    centers, sizes = crop_boxes(boxes, rescale_factor)
    crops = np.empty((len(boxes), patch_size, patch_size, image.shape[2]), np.float32)
    for i in range(len(boxes)):
        crops[i] = crop_hand(image, centers[i], sizes[i], bool(is_right[i]), patch_size)
    return crops, centers, sizes
