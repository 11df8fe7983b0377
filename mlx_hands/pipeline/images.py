"""Image loading and validation: every image entering the pipeline becomes an (H, W, 3) RGB uint8 array.

Rules (one place, so the CLI, the Python API and the video path agree):
- a path (str / Path) is read with OpenCV (cv2.imread, as the reference demos do: any format it
  decodes, 16-bit files reduced to 8 bits, EXIF orientation applied) and converted BGR -> RGB;
- an array must be uint8: (H, W, 3) is taken as RGB as is, (H, W) or (H, W, 1) grey is replicated to three
  channels, (H, W, 4) RGBA drops its alpha (no compositing);
- anything else (float or 16-bit arrays, other shapes, empty images, unreadable files, JPEG and PNG files cut
  short, images over MAX_PIXELS) raises one ValueError (FileNotFoundError for a missing path) that names the
  file or argument and says what was wrong. OpenCV decodes a truncated JPEG into a half-grey picture with only
  a warning on stderr, so completeness is checked on the bytes first.
  Float arrays are refused rather than guessed at (0..1 or 0..255?): convert them with
  `(x * 255).round().clip(0, 255).astype(np.uint8)` or `x.round().clip(0, 255).astype(np.uint8)`.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import cv2
import numpy as np

MAX_PIXELS = 1 << 28  # 268 million pixels (an 800 MB RGB image): beyond this an image is refused, not decoded
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
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ValueError(f"{name}: {image.shape[1]}x{image.shape[0]} pixels is more than this pipeline takes "
                         f"({MAX_PIXELS / 1e6:.0f} million); downscale it first")
    if image.shape[2] == 4:
        image = image[:, :, :3]  # RGBA: alpha dropped, colour kept as is
    return np.ascontiguousarray(image)


def truncation(data: bytes) -> str | None:
    """Why an encoded image is cut short, or None: a JPEG without its end-of-image marker after the image data,
    a PNG without its IEND chunk. Other formats are left to the decoder."""
    if data[:2] == b"\xff\xd8":
        pos = 2
        while True:  # walk the header segments to the first start-of-scan (skips an EXIF thumbnail's markers)
            while pos + 1 < len(data) and data[pos] == 0xFF and data[pos + 1] == 0xFF:
                pos += 1  # fill bytes
            if pos + 4 > len(data) or data[pos] != 0xFF:
                return "truncated or damaged JPEG (its header ends early)"
            marker = data[pos + 1]
            if marker == 0xDA:
                break
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:
                pos += 2
                continue
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data.rfind(b"\xff\xd9") < pos:  # entropy-coded data stuffs every 0xFF, so this is the real marker
            return "truncated JPEG (the file ends before its end-of-image marker)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        pos = 8
        while pos + 8 <= len(data):
            if data[pos + 4 : pos + 8] == b"IEND":
                return None
            pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
        return "truncated PNG (the file ends before its IEND chunk)"
    return None


def _checked(data: bytes, name: str) -> None:
    if not data:
        raise ValueError(f"{name}: empty file")
    why = truncation(data)
    if why:
        raise ValueError(f"{name}: {why}")


def _decoded(bgr, name: str) -> np.ndarray:
    if bgr is None or bgr.size == 0:
        raise ValueError(f"{name}: not a readable image (corrupt or an unsupported format)")
    return to_rgb_uint8(np.ascontiguousarray(bgr[:, :, ::-1]), name)


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ... as a file holds them) -> (H, W, 3) RGB uint8, checked as read_image."""
    _checked(data, name)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:  # e.g. more pixels than OpenCV's own limit
        raise ValueError(f"{name}: cannot decode ({(e.err or str(e)).strip()})") from None
    return _decoded(bgr, name)


def read_image(path: str | PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) RGB uint8 (cv2.imread, as the reference demos; EXIF orientation applied)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such image file")
    if p.is_dir():
        raise ValueError(f"{p}: is a directory, expected an image file")
    try:
        _checked(p.read_bytes(), str(p))
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise ValueError(f"{p}: cannot decode ({(e.err or str(e)).strip()})") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot read ({e.strerror or e})") from None
    return _decoded(bgr, str(p))


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
