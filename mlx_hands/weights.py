"""The canonical checkpoint directory: config.json + model.safetensors (+ mano.safetensors).

    config.json        {"format_version": 1, "dtype": ..., "wilor": {...}, "detector": {...}?, "source": {...}}
    model.safetensors  MLX layout, keys prefixed "wilor." and "detector.", metadata {"format": "mlx"}
    mano.safetensors   the user's MANO_RIGHT.pkl, converted locally (never bundled)

Loading is strict: no renaming, missing or extra keys raise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from .config import DetectorConfig, WiLoRConfig

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE, MODEL_FILE, MANO_FILE = "config.json", "model.safetensors", "mano.safetensors"
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def parameter_shapes(model) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape, without evaluating anything (MLX arrays are lazy)."""
    return {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}


def wilor_shapes(config: WiLoRConfig) -> dict[str, tuple[int, ...]]:
    from .models.wilor import WiLoR

    return parameter_shapes(WiLoR(config))


def _as_mx(w: np.ndarray, dtype) -> mx.array:
    a = mx.array(w)
    return a.astype(dtype) if mx.issubdtype(a.dtype, mx.floating) else a


def save_model(
    path: str | Path,
    *,
    wilor: dict[str, np.ndarray] | None = None,
    wilor_config: WiLoRConfig | None = None,
    detector: dict[str, np.ndarray] | None = None,
    detector_config: DetectorConfig | None = None,
    dtype: str = "float32",
    source: dict | None = None,
) -> Path:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, weights in (("wilor.", wilor), ("detector.", detector)):
        for k, w in (weights or {}).items():
            arrays[prefix + k] = _as_mx(w, DTYPES[dtype])
    config = {"format_version": FORMAT_VERSION, "dtype": dtype, "source": source or {}}
    if wilor is not None:
        config["wilor"] = (wilor_config or WiLoRConfig()).to_dict()
    if detector is not None:
        config["detector"] = (detector_config or DetectorConfig()).to_dict()
    # write to temporary names first so an interrupted conversion never leaves a half-written model
    tmp = path / "model.partial.safetensors"
    mx.save_safetensors(str(tmp), arrays, metadata={"format": "mlx"})
    tmp.rename(path / MODEL_FILE)
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return path


def load_config(path: str | Path) -> dict:
    path = Path(path)
    f = path / CONFIG_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not a converted mlx-hands model: {CONFIG_FILE} is missing "
                                f"(convert the original files with `mlx-hands convert`)")
    try:
        config = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f} is not valid JSON: {e}") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{f}: unsupported format_version {config.get('format_version')!r} (expected {FORMAT_VERSION})")
    return config


def _load_arrays(path: Path, prefix: str) -> dict[str, mx.array]:
    f = path / MODEL_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{f} is missing")
    try:
        arrays = mx.load(str(f))
    except Exception as e:  # mlx raises RuntimeError/ValueError with terse messages for bad files
        raise ValueError(f"{f} is not a readable safetensors file ({e})") from None
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_arrays_np(path: str | Path, prefix: str) -> dict[str, np.ndarray]:
    """A converted network's arrays as numpy (bf16 widened to float32), e.g. to re-save them."""
    return {k: np.array(v.astype(mx.float32) if v.dtype == mx.bfloat16 else v)
            for k, v in _load_arrays(Path(path), prefix).items()}


def load_weights_strict(model, arrays: dict[str, mx.array], source: str) -> None:
    expected = parameter_shapes(model)
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    bad = [f"{k}: {tuple(arrays[k].shape)} != {expected[k]}" for k in expected if k in arrays
           and tuple(arrays[k].shape) != expected[k]]
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:5])})")
        if extra:
            parts.append(f"unexpected {len(extra)} tensors (e.g. {', '.join(extra[:5])})")
        if bad:
            parts.append("mis-shaped: " + "; ".join(bad[:5]))
        raise ValueError(f"{source} does not match the model: " + ", ".join(parts))
    model.load_weights(list(arrays.items()), strict=True)


def load_wilor(path: str | Path, *, mano_path: str | Path | None = None, dtype: str | None = None):
    """Load WiLoR from a converted directory. MANO from `mano_path` or the directory's mano.safetensors."""
    from .convert.mano import load_mano
    from .models.wilor import WiLoR

    path = Path(path)
    config = load_config(path)
    if "wilor" not in config:
        raise ValueError(f"{path} holds no WiLoR weights (config.json has no 'wilor' entry)")
    model = WiLoR(WiLoRConfig.from_dict(config["wilor"]))
    load_weights_strict(model, _load_arrays(path, "wilor."), f"{path / MODEL_FILE}")
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        model.set_dtype(DTYPES[dtype])
    mano_file = Path(mano_path) if mano_path is not None else path / MANO_FILE
    if not mano_file.is_file():
        raise FileNotFoundError(
            f"MANO model not found at {mano_file}. MANO is licensed separately and never bundled: get "
            f"MANO_RIGHT.pkl from https://mano.is.tue.mpg.de and convert it with "
            f"`mlx-hands convert --mano MANO_RIGHT.pkl -o {path}`, or pass mano_path=")
    mano = load_mano(mano_file) if mano_file.suffix == ".safetensors" else _read_mano_any(mano_file)
    model.mano.set_data(mano)
    mx.eval(model.parameters())
    return model


def _read_mano_any(path: Path) -> dict:
    from .convert.mano import read_mano

    return read_mano(path)


def load_detector(path: str | Path, dtype: str | None = None):
    """Load the YOLOv8-pose hand detector from a converted directory, or None if it holds none."""
    from .models.yolo import YOLOPose

    path = Path(path)
    config = load_config(path)
    if "detector" not in config:
        return None
    model = YOLOPose(DetectorConfig.from_dict(config["detector"]))
    load_weights_strict(model, _load_arrays(path, "detector."), f"{path / MODEL_FILE}")
    if dtype is not None:
        model.set_dtype(DTYPES[dtype])
    mx.eval(model.parameters())
    return model
