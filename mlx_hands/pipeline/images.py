"""Image loading and validation: every image entering the pipeline becomes an (H, W, 3) RGB uint8 array.

Rules (one place, so the CLI, the Python API and the video path agree):
- a path (str / Path) is read with OpenCV (cv2.imread, as the reference demos do: any format it
  decodes, 16-bit files reduced to 8 bits, EXIF orientation applied) and converted BGR -> RGB;
- an array must be uint8: (H, W, 3) is taken as RGB as is, (H, W) or (H, W, 1) grey is replicated to three
  channels, (H, W, 4) RGBA drops its alpha (no compositing);
- anything else (float or 16-bit arrays, other shapes, empty images, unreadable files) raises one ValueError
  (FileNotFoundError for a missing path) that names the file or argument and says what was expected.
  Float arrays are refused rather than guessed at (0..1 or 0..255?): convert them with
  `(x * 255).round().clip(0, 255).astype(np.uint8)` or `x.round().clip(0, 255).astype(np.uint8)`.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm", ".pnm")


def is_image_path(path: str | PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def to_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate an array and return it as a C-contiguous (H, W, 3) RGB uint8 array (no copy when it already is)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array or an image path, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(
            f"{name}: expected a uint8 image (0..255), got dtype {image.dtype}; convert it first, e.g. "
            "(x * 255).round().clip(0, 255).astype(np.uint8) for floats in 0..1"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        if image.size == 0:
            raise ValueError(f"{name}: empty image of shape {image.shape}")
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"{name}: expected shape (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey, got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name}: empty image of shape {image.shape}")
    if image.shape[2] == 4:
        image = image[:, :, :3]  # RGBA: alpha dropped, colour kept as is
    return np.ascontiguousarray(image)


def read_image(path: str | PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) RGB uint8."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such image file")
    if p.is_dir():
        raise ValueError(f"{p}: is a directory, expected an image file")
    bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)  # as the reference demos read their images
    if bgr is None or bgr.size == 0:
        raise ValueError(f"{p}: not a readable image (empty, corrupt or an unsupported format)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def load_image(image: str | PathLike | np.ndarray, name: str = "image") -> np.ndarray:
    """A path or an array -> (H, W, 3) RGB uint8, following the module's rules."""
    if isinstance(image, (str, PathLike)):
        return read_image(image)
    return to_rgb_uint8(image, name)


def write_image(path: str | PathLike, image_rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) RGB uint8 image (format from the suffix: .jpg, .png, ...) or raise one OSError naming it."""
    p = Path(path)
    try:
        ok = cv2.imwrite(str(p), np.ascontiguousarray(image_rgb[:, :, ::-1]))
    except cv2.error as e:
        raise OSError(f"cannot write {p}: {e.err or e}") from None
    if not ok:
        raise OSError(f"cannot write {p} (OpenCV could not encode or save it)")
    return p
