"""Calibration crops for GPTQ quantization (mlx_hands.quant): hands cut from the user's photos, exactly
as the pipeline cuts them for WiLoR, or crops already saved as .npy/.npz."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..config import CONF
from . import preprocess
from .detection import detect
from .images import is_image_path, read_image
from .runner import folder_detector

log = logging.getLogger(__name__)

MAX_CROPS = 64


def _load_array(path: Path) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npy/.npz file ({e})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            keys = list(data.keys())
            if not keys:
                raise ValueError(f"{path}: the .npz holds no arrays")
            return data["crops"] if "crops" in keys else data[keys[0]]
    return data


def _image_files(paths) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and is_image_path(f))
            if not found:
                raise ValueError(f"{p}: no images in this folder")
            files += found
        elif not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        else:
            files.append(p)
    return files


def calibration_crops(paths, detector_fn=None, *, imgsz: int = 640, kpt_shape=(21, 3), max_crops: int = MAX_CROPS,
                      conf: float = CONF) -> np.ndarray:
    """Photos (files or folders) and/or .npy/.npz crop arrays -> float32 crops (N, 256, 256, 3), RGB 0..255.

    Hands in photos are found with detector_fn (the letterboxed uint8 image (1, h, w, 3) -> the decoded head
    output as numpy, see detection.detect) and cut as the pipeline does (rescale 2.5, left hands mirrored);
    at most max_crops are kept.
    """
    arrays, photos = [], []
    for p in map(Path, paths):
        (arrays if p.suffix.lower() in (".npy", ".npz") else photos).append(p)
    crops = []
    for p in arrays:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file")
        a = _load_array(p)
        if a.ndim != 4 or a.shape[1:] != (preprocess.PATCH_SIZE, preprocess.PATCH_SIZE, 3):
            raise ValueError(f"{p}: expected crops of shape (N, {preprocess.PATCH_SIZE}, {preprocess.PATCH_SIZE}, 3), "
                             f"got {a.shape}")
        crops += list(a.astype(np.float32))
    files = _image_files(photos)
    if files and detector_fn is None:
        raise ValueError("calibrating on photos needs the hand detector, and the model has none: pass crops as "
                         ".npy/.npz instead")
    for f in files:
        if len(crops) >= max_crops:
            break
        img = read_image(f)
        det = detect(detector_fn, img, imgsz=imgsz, conf=conf, kpt_shape=tuple(kpt_shape), uint8_input=True)
        if len(det.boxes):
            c, _, _ = preprocess.crop_hands(img, det.boxes, det.is_right)
            crops += list(c)
        log.info("%s: %d hands", f, len(det.boxes))
    if not crops:
        where = "the photos" if files else "the given files"
        raise ValueError(f"no calibration crops: no hands found in {where}")
    return np.stack(crops[:max_crops]).astype(np.float32)


def folder_calibration_crops(folder, paths, *, max_crops: int = MAX_CROPS) -> np.ndarray:
    """calibration_crops with the hand detector of the converted model `folder` (if it has one)."""
    found = folder_detector(folder)
    if found is None:
        return calibration_crops(paths, None, max_crops=max_crops)
    fn, config = found
    return calibration_crops(paths, fn, imgsz=config.imgsz, kpt_shape=config.kpt_shape, max_crops=max_crops)
