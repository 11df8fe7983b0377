"""What a client may send, checked: request options, stream settings, image bytes. numpy only.

Every problem raises `RequestError(status, message)` with a message that names the option or the defect, so
the HTTP layer can answer 4xx with it and the stream can send it as an error message.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..pipeline import images

MAX_PIXELS = 50_000_000  # decoded RGB is 3 bytes a pixel: a small PNG must not expand into gigabytes

# option name -> (kind, lower bound, lower bound included, upper bound); "focal_length" is pixels of the image
_NUMBERS = {
    "conf": ("float", 0.0, True, 1.0),
    "iou": ("float", 0.0, True, 1.0),
    "max_det": ("int", 1, True, 1000),
    "rescale_factor": ("float", 0.0, False, 20.0),
    "focal_length": ("float", 0.0, False, 1e7),
    "min_cutoff": ("float", 0.0, False, 1e3),
    "beta": ("float", 0.0, True, 1e3),
    "d_cutoff": ("float", 0.0, False, 1e3),
    "max_lost": ("int", 0, True, 10_000),
    "detect_every": ("int", 1, True, 10_000),
    "max_hands": ("int", 1, True, 1000),
    "handedness_lock": ("int", 1, True, 1000),
    "min_tracking_score": ("float", 0.0, True, 1.0),
    "min_visible": ("float", 0.0, True, 1.0),
    "min_extent_px": ("float", 0.0, True, 1e6),
}
_BOOLS = ("vertices", "smooth", "track", "swap_handedness")
_CHOICES = {"force_handedness": ("left", "right")}
_NULLABLE = ("focal_length", "max_hands", "force_handedness")  # null: the default
PREDICT_OPTIONS = ("conf", "iou", "max_det", "rescale_factor", "focal_length", "vertices")
# pipeline.stream.HandStream's options (tracking between detections, handedness lock, One Euro smoothing)
HAND_STREAM = ("track", "detect_every", "max_hands", "handedness_lock", "force_handedness", "swap_handedness",
               "min_tracking_score", "min_visible", "min_extent_px", "smooth", "min_cutoff", "beta", "d_cutoff",
               "max_lost")
STREAM_SETTINGS = PREDICT_OPTIONS + HAND_STREAM


class RequestError(ValueError):
    """A client mistake: `status` is the HTTP status to answer with (4xx), the message names the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------------- options
def _number(name: str, value: Any):
    kind, lo, lo_incl, hi = _NUMBERS[name]
    if isinstance(value, str):  # query parameters arrive as text
        try:
            value = int(value) if kind == "int" else float(value)
        except ValueError:
            raise RequestError(400, f"{name} must be {'an integer' if kind == 'int' else 'a number'}, "
                                    f"got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(400, f"{name} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    if kind == "int" and value != int(value):
        raise RequestError(400, f"{name} must be an integer, got {value!r}")
    if not math.isfinite(value) or value > hi or (value < lo if lo_incl else value <= lo):
        bound = f"{'>=' if lo_incl else '>'} {lo} and <= {hi:g}"
        raise RequestError(400, f"{name} must be {bound}, got {value!r}")
    return int(value) if kind == "int" else float(value)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("0", "1", "true", "false", "yes", "no"):
        return value.lower() in ("1", "true", "yes")
    raise RequestError(400, f"{name} must be true/false or 1/0, got {value!r}")


def check_options(values: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    """Names and values of client options -> {name: checked value}; an unknown name is an error naming it."""
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise RequestError(400, f"unknown {where} {', '.join(map(repr, unknown))}; "
                                f"known: {', '.join(allowed)}")
    return {k: _check(k, v) for k, v in values.items()}


def _check(name: str, value: Any):
    if value is None and name in _NULLABLE:
        return None
    if name in _BOOLS:
        return _bool(name, value)
    if name in _CHOICES:
        if value not in _CHOICES[name]:
            raise RequestError(400, f"{name} must be one of {', '.join(_CHOICES[name])} or null, got {value!r}")
        return value
    return _number(name, value)


def pipeline_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """Checked options -> keyword arguments of HandPosePipeline.__call__ / predict_many (None = the server's)."""
    return {
        "conf": options.get("conf"),
        "iou": options.get("iou"),
        "max_det": options.get("max_det"),
        "rescale_factor": options.get("rescale_factor"),
        "focal_length_px": options.get("focal_length"),
        "include_vertices": options.get("vertices", True),
    }


@dataclasses.dataclass
class StreamSettings:
    """A stream's settings: `pipeline`, the pipeline options its calls get (None: the server's), and `stream`,
    the keyword arguments of pipeline.stream.HandStream (include_vertices among them)."""

    pipeline: dict[str, Any]
    stream: dict[str, Any]

    @property
    def vertices(self) -> bool:
        return bool(self.stream["include_vertices"])


def parse_stream_settings(message: Any) -> StreamSettings:
    """The optional first text message of a stream (a JSON object, already parsed) -> StreamSettings. Vertices
    are left out unless asked for, as in the video mode's JSON Lines (778 x 3 numbers a hand)."""
    if not isinstance(message, dict):
        raise RequestError(400, f"stream settings must be a JSON object, got {type(message).__name__}")
    options = check_options(message, STREAM_SETTINGS, "stream setting")
    stream = {k: options.pop(k) for k in HAND_STREAM if k in options}
    stream["include_vertices"] = options.pop("vertices", False)
    pipeline = {k: v for k, v in pipeline_kwargs(options).items() if k != "include_vertices"}
    return StreamSettings(pipeline, stream)


# ---------------------------------------------------------------------------------------------- images
def image_kind(data: bytes) -> str:
    """'jpeg' or 'png' from the first bytes, or RequestError 415."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if not data:
        raise RequestError(400, "empty image: the request body or frame has no bytes")
    raise RequestError(415, f"not a JPEG or PNG image (the data starts with {data[:8].hex(' ')}); "
                            "send the bytes of a .jpg or .png file")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the JPEG frame header (SOFn), without decoding; None if there is none."""
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[pos + 5: pos + 9])
            return w, h
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        pos += 2 + struct.unpack(">H", data[pos + 2: pos + 4])[0]
    return None


def check_image_bytes(data: bytes, max_pixels: int = MAX_PIXELS) -> str:
    """JPEG or PNG of a sane size (from its header, before anything is decoded) -> the kind, or RequestError."""
    kind = image_kind(data)
    if kind == "jpeg":
        size = _jpeg_size(data)
    else:
        size = struct.unpack(">II", data[16:24]) if data[12:16] == b"IHDR" else None
    if size is None:
        raise RequestError(400, f"corrupt {kind.upper()}: no image size in its header")
    w, h = size
    if w < 1 or h < 1:
        raise RequestError(400, f"corrupt {kind.upper()}: its header says {w}x{h} pixels")
    if w * h > max_pixels:
        raise RequestError(413, f"image of {w}x{h} pixels is larger than this server's limit of "
                                f"{max_pixels / 1e6:g} megapixels")
    return kind


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """JPEG/PNG bytes -> (H, W, 3) RGB uint8 through the package's one reader (pipeline.images.decode_image:
    the same decoder as `mlx-hands predict`, and a JPEG or PNG cut short is refused rather than decoded grey)."""
    check_image_bytes(data, max_pixels)
    try:
        return images.decode_image(data, name)
    except ValueError as e:
        raise RequestError(400, str(e)) from None


def decode_base64(text: Any, name: str = "image") -> bytes:
    """Base64 text (optionally a data: URL, as browsers write them) -> bytes, or RequestError naming `name`."""
    if not isinstance(text, str):
        raise RequestError(400, f"{name} must be a base64 string, got {type(text).__name__}")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{name} is not valid base64") from None
