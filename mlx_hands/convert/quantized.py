"""A converted folder -> a quantized and/or re-typed copy (the same canonical format, mlx_hands.weights)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from ..config import DTYPES, MANO_FILE, DetectorConfig, WiLoRConfig
from ..quant import check_settings, quantization_config, quantize_model
from ..weights import build_wilor, load_config, model_arrays, read_arrays, save_model, set_precision

log = logging.getLogger(__name__)


def quantize_dir(
    src: str | Path,
    dst: str | Path,
    *,
    bits: int | None = 4,
    group_size: int = 64,
    dtype: str | None = None,
    overrides: dict | None = None,
    uniform: bool = False,
    calibration: np.ndarray | None = None,
) -> Path:
    """Write a quantized (bits 4/8) and/or re-typed (dtype) copy of the converted model at `src` to `dst`.

    bits=None only changes the float dtype. The detector (if any) is copied, cast to `dtype`; MANO is
    copied as is (it stays on this machine like the original). calibration: hand crops (N, 256, 256, 3),
    RGB 0..255 (mlx_hands.pipeline.calibration makes them from photos): the levels are then chosen with
    GPTQ; None rounds to nearest.
    """
    src, dst = Path(src), Path(dst)
    if bits is None and dtype is None:
        raise ValueError("nothing to do: give bits (4 or 8) and/or a dtype")
    if bits is not None:
        check_settings(bits, group_size)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if src.resolve() == dst.resolve():
        raise ValueError(f"the output folder must differ from the input folder ({src})")
    if calibration is not None and bits is None:
        raise ValueError("calibration data only serves quantization: give bits (4 or 8)")
    config = load_config(src)
    if "wilor" not in config:
        raise ValueError(f"{src} holds no WiLoR weights (config.json has no 'wilor' entry)")
    model = build_wilor(WiLoRConfig.from_dict(config["wilor"]), read_arrays(src, "wilor."),
                        config.get("quantization"), str(src))
    out_dtype = dtype or config.get("dtype", "float32")
    set_precision(model, out_dtype)
    entry = quantization_config(model)
    if bits is not None:
        entry = quantize_model(model, bits, group_size, overrides=overrides, uniform=uniform, calibration=calibration)
    det = read_arrays(src, "detector.") if "detector" in config else None
    save_model(dst, wilor=model_arrays(model), wilor_config=model.config,
               detector=det, detector_config=DetectorConfig.from_dict(config["detector"]) if det else None,
               dtype=out_dtype, quantization=entry,
               source=dict(config.get("source") or {}, derived_from=str(src)))
    if (src / MANO_FILE).is_file():
        shutil.copyfile(src / MANO_FILE, dst / MANO_FILE)
    return dst
