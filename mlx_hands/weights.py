"""The canonical converted folder, read and written; nothing else is read at run time.

    config.json        {"format_version": 1, "dtype": ..., "wilor": {...}, "detector": {...}?, "source": {...},
                        "quantization": {"group_size": 64, "bits": 4, "mode": "affine", ...}?}
    model.safetensors  MLX layout, keys prefixed "wilor." and "detector.", metadata {"format": "mlx"}
    mano.safetensors   the user's MANO_RIGHT.pkl, converted locally (never bundled), metadata
                       {"format": "mlx-hands-mano"}

Loading is strict: no renaming, missing or extra keys raise. "dtype" is the float dtype of the stored
weights; "quantization" (mlx_hands.quant) describes the WiLoR network's quantized linears, which are
rebuilt before the strict load. Every other format (the original .ckpt / .pt / .pkl files, the predecessor
project's files) goes through mlx_hands.convert once.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from safetensors import safe_open
from safetensors.numpy import save_file

from .config import (CONFIG_FILE, DTYPES, FORMAT_VERSION, MANO_FILE, MODEL_FILE, DetectorConfig, WiLoRConfig)
from .models import mx_dtype
from .models.wilor import WiLoR
from .models.yolo import YOLOPose
from .quant import apply_quantization, parse_quantize, quantization_config, quantize_model

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- MANO (mano.safetensors)

# Canonical layout (what the MLX MANO layer consumes), V = 778 vertices, J = 16 joints, following smplx:
#   v_template (V, 3) float32 metres; shapedirs (V, 3, 10); posedirs (9 (J-1), 3 V); J_regressor (J, V) dense;
#   lbs_weights (V, J); parents (J,) int32 with the root as -1; faces (F, 3) int32.
MANO_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "parents", "faces")
MANO_FORMAT = "mlx-hands-mano"
NUM_BETAS = 10
_MANO_DTYPES = {k: np.float32 for k in MANO_KEYS} | {"parents": np.int32, "faces": np.int32}


def mano_shapes(V: int, J: int, F: int | None) -> dict[str, tuple]:
    """The canonical MANO shapes for V vertices, J joints and F faces (None: any)."""
    return {"v_template": (V, 3), "shapedirs": (V, 3, NUM_BETAS), "posedirs": (9 * (J - 1), 3 * V),
            "J_regressor": (J, V), "lbs_weights": (V, J), "parents": (J,), "faces": (F, 3)}


def check_shape(source: str, key: str, arr: np.ndarray, expected: tuple) -> None:
    found = tuple(arr.shape)
    if len(found) != len(expected) or any(e is not None and e != f for e, f in zip(expected, found)):
        shown = tuple("F" if e is None else e for e in expected)
        raise ValueError(f"{source}: MANO key {key!r} has shape {found}, expected {shown}")


def check_mano(arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Check keys, shapes, values and parents of canonical MANO arrays; return them with canonical dtypes."""
    missing = [k for k in MANO_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{source}: missing MANO key(s) {missing}; expected {list(MANO_KEYS)}")
    vt, par = np.asarray(arrays["v_template"]), np.asarray(arrays["parents"])
    if vt.ndim != 2:
        raise ValueError(f"{source}: MANO key 'v_template' has shape {vt.shape}, expected (V, 3)")
    if par.ndim != 1 or par.shape[0] < 1:
        raise ValueError(f"{source}: MANO key 'parents' has shape {par.shape}, expected (J,)")
    expected = mano_shapes(vt.shape[0], par.shape[0], None)
    out = {}
    for key in MANO_KEYS:
        a = np.asarray(arrays[key])
        check_shape(source, key, a, expected[key])
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"{source}: MANO key {key!r} holds NaN or infinite values (a damaged file)")
        out[key] = np.ascontiguousarray(a, dtype=_MANO_DTYPES[key])
    p, J = out["parents"], out["parents"].shape[0]
    if p[0] != -1 or np.any(p[1:] < 0) or np.any(p[1:] >= np.arange(1, J)):
        raise ValueError(f"{source}: MANO 'parents' must be -1 for the root and an earlier joint otherwise, found "
                         f"{p.tolist()}")
    f = out["faces"]
    if f.size and (f.min() < 0 or f.max() >= vt.shape[0]):
        raise ValueError(f"{source}: MANO 'faces' index vertices outside [0, {vt.shape[0]})")
    return out


def save_mano(arrays: dict[str, np.ndarray], path, *, source: str | None = None) -> Path:
    """Write canonical MANO arrays to mano.safetensors (metadata: the format and the file they came from)."""
    path = Path(path)
    arrays = check_mano(arrays, "save_mano")
    meta = {"format": MANO_FORMAT, "source": Path(source).name if source else path.name}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file(arrays, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def read_safetensors(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(numpy arrays, metadata) of a safetensors file, or one error naming it (damaged header, truncation, a dtype
    numpy lacks such as bfloat16)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None


def load_mano(path) -> dict[str, np.ndarray]:
    """Read a mano.safetensors written by save_mano, checking keys, shapes and values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MANO file not found: {path}")
    arrays, meta = read_safetensors(path)
    if meta.get("format") != MANO_FORMAT:
        raise ValueError(f"{path}: not a converted MANO file (metadata format {meta.get('format')!r}, expected "
                         f"{MANO_FORMAT!r}); convert MANO_RIGHT.pkl with `mlx-hands convert --mano`")
    return check_mano(arrays, str(path))


# ---------------------------------------------------------------- config.json


def load_config(path: str | Path) -> dict:
    """config.json of a converted folder, every field checked (one ValueError naming the first bad one)."""
    path = Path(path)
    f = path / CONFIG_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not a converted mlx-hands model: {CONFIG_FILE} is missing "
                                f"(convert the original files with `mlx-hands convert`)")
    try:
        config = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{f} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{f}: expected a JSON object, got {type(config).__name__}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{f}: unsupported format_version {config.get('format_version')!r} (expected {FORMAT_VERSION})")
    known = {"format_version", "dtype", "source", "wilor", "detector", "quantization"}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"{f}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    dtype = config.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"{f}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if "wilor" not in config and "detector" not in config:
        raise ValueError(f"{f}: holds neither 'wilor' nor 'detector'")
    try:
        if "wilor" in config:
            WiLoRConfig.from_dict(config["wilor"])
        if "detector" in config:
            DetectorConfig.from_dict(config["detector"])
        q = config.get("quantization")
        if q is not None:
            if not isinstance(q, dict):
                raise ValueError(f"quantization must be an object, got {q!r}")
            parse_quantize({k: q[k] for k in ("bits", "group_size", "mode") if k in q})
    except ValueError as e:
        raise ValueError(f"{f}: {e}") from None
    if not isinstance(config.get("source", {}), dict):
        raise ValueError(f"{f}: source must be an object")
    return config


# ---------------------------------------------------------------- model.safetensors


def parameter_shapes(model) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape, without evaluating anything (MLX arrays are lazy)."""
    return {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}


def model_arrays(model) -> dict[str, mx.array]:
    """Parameter name -> array, as save_model takes them."""
    return dict(tree_flatten(model.parameters()))


def check_finite(arrays: dict[str, mx.array], source: str) -> None:
    """Refuse float weights holding NaN or infinity (a damaged file), naming them."""
    bad = [k for k, w in arrays.items() if mx.issubdtype(w.dtype, mx.floating) and not mx.all(mx.isfinite(w)).item()]
    if bad:
        raise ValueError(f"{source}: {len(bad)} tensor(s) hold NaN or infinite values (a damaged file?): "
                         f"{', '.join(bad[:5])}")


def _as_mx(w, dtype) -> mx.array:
    a = w if isinstance(w, mx.array) else mx.array(w)
    return a.astype(dtype) if mx.issubdtype(a.dtype, mx.floating) else a


def save_model(
    path: str | Path,
    *,
    wilor: dict | None = None,
    wilor_config: WiLoRConfig | None = None,
    detector: dict | None = None,
    detector_config: DetectorConfig | None = None,
    dtype: str = "float32",
    source: dict | None = None,
    quantization: dict | None = None,
) -> Path:
    """Write a converted folder. Arrays may be numpy or mlx (quantized WiLoR arrays as nn.QuantizedLinear
    holds them); floats are cast to `dtype`. `quantization` is the entry mlx_hands.quant.quantize_model
    returned, recorded in config.json. Non-finite weights are refused."""
    mxd = mx_dtype(dtype)
    path = Path(path)
    arrays = {}
    for prefix, weights in (("wilor.", wilor), ("detector.", detector)):
        for k, w in (weights or {}).items():
            arrays[prefix + k] = _as_mx(w, mxd)
    check_finite(arrays, "the weights to save")
    config = {"format_version": FORMAT_VERSION, "dtype": dtype, "source": source or {}}
    if wilor is not None:
        config["wilor"] = (wilor_config or WiLoRConfig()).to_dict()
        if quantization:
            config["quantization"] = quantization
    if detector is not None:
        config["detector"] = (detector_config or DetectorConfig()).to_dict()
    path.mkdir(parents=True, exist_ok=True)
    # temporary names first: an interrupted write never leaves a half-written model
    tmp = path / "model.partial.safetensors"
    mx.save_safetensors(str(tmp), arrays, metadata={"format": "mlx"})
    os.replace(tmp, path / MODEL_FILE)
    tmp = path / (CONFIG_FILE + ".partial")
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, path / CONFIG_FILE)
    return path


def read_arrays(path: str | Path, prefix: str) -> dict[str, mx.array]:
    """The arrays of one network ("wilor." or "detector.") of a converted folder, prefix removed."""
    f = Path(path) / MODEL_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{f} is missing")
    try:
        arrays = mx.load(str(f))
    except Exception as e:  # mlx raises RuntimeError/ValueError with terse messages for bad files
        raise ValueError(f"{f} is not a readable safetensors file ({e})") from None
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def read_arrays_np(path: str | Path, prefix: str) -> dict[str, np.ndarray]:
    """A converted network's arrays as numpy (bfloat16 widened to float32), e.g. to re-save them."""
    return {k: np.array(v.astype(mx.float32) if v.dtype == mx.bfloat16 else v)
            for k, v in read_arrays(path, prefix).items()}


def check_weights(model, arrays: dict, source: str) -> None:
    """Raise ValueError naming the missing, unexpected and mis-shaped tensors, if any."""
    expected = parameter_shapes(model)
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    bad = [f"{k}: {tuple(arrays[k].shape)} != {expected[k]}" for k in expected if k in arrays
           and tuple(arrays[k].shape) != expected[k]]
    if missing or extra or bad:
        parts = []
        if any(k.endswith(".scales") for k in missing + extra):
            where = "the file" if any(k.endswith(".scales") for k in extra) else "the model"
            parts.append(f"{where} is quantized and the other is not, or at other layers")
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:5])})")
        if extra:
            parts.append(f"unexpected {len(extra)} tensors (e.g. {', '.join(extra[:5])})")
        if bad:
            parts.append("mis-shaped: " + "; ".join(bad[:5]))
        raise ValueError(f"{source} does not match the model: " + ", ".join(parts))


def load_weights_strict(model, arrays: dict[str, mx.array], source: str) -> None:
    check_weights(model, arrays, source)
    model.load_weights(list(arrays.items()), strict=True)


def build_wilor(config: WiLoRConfig, arrays: dict, quantization: dict | None, source: str, cls=WiLoR):
    """cls(config) with `arrays` loaded strictly; quantized layers are rebuilt first (mlx_hands.quant)."""
    model = cls(config)
    apply_quantization(model, arrays, quantization, source)
    load_weights_strict(model, arrays, source)
    return model


def set_precision(model, dtype: str | None = None, quantize=None, source: str = "the model") -> None:
    """Cast the float weights to `dtype`, then quantize (mlx_hands.quant.parse_quantize forms).

    Asking a quantized model for the quantization it already has is a no-op; other settings raise.
    """
    if dtype is not None:
        model.set_dtype(mx_dtype(dtype))
    q = parse_quantize(quantize)
    if q is None:
        return
    have = quantization_config(model)
    if have is not None:
        same = all(have[k] == q[k] for k in ("bits", "group_size", "mode"))
        if same and not q.get("overrides") and not q.get("uniform"):
            return
        raise ValueError(f"{source} is already quantized ({have['bits']}-bit, group size {have['group_size']}); "
                         f"it cannot be re-quantized to {q['bits']}-bit, group size {q['group_size']}: load a float "
                         f"model with quantize=, or a folder written with those settings")
    quantize_model(model, q["bits"], q["group_size"], mode=q["mode"], overrides=q.get("overrides"),
                   uniform=bool(q.get("uniform")), calibration=q.get("calibration"))


def load_wilor(path: str | Path, *, mano_file: str | Path | None = None, dtype: str | None = None, quantize=None,
               cls=WiLoR):
    """WiLoR from a converted folder, MANO from `mano_file` (a converted mano.safetensors) or the folder's own.

    The stored precision (float dtype, quantization) comes from config.json; dtype= casts the float weights
    and quantize= (4, 8 or {"bits", "group_size"}) quantizes a float model after loading.
    """
    path = Path(path)
    config = load_config(path)
    if "wilor" not in config:
        raise ValueError(f"{path} holds no WiLoR weights (config.json has no 'wilor' entry)")
    mano_file = Path(mano_file) if mano_file is not None else path / MANO_FILE
    if not mano_file.is_file():
        raise FileNotFoundError(
            f"no MANO model: {mano_file} is missing. MANO is licensed separately and never bundled: download "
            f"MANO_RIGHT.pkl from https://mano.is.tue.mpg.de, then pass it with --mano MANO_RIGHT.pkl "
            f"(Python: mano_path=)")
    mano = load_mano(mano_file)
    source = str(path / MODEL_FILE)
    arrays = read_arrays(path, "wilor.")
    model = build_wilor(WiLoRConfig.from_dict(config["wilor"]), arrays, config.get("quantization"), source, cls)
    set_precision(model, dtype, quantize, source)
    model.mano.set_data(mano)
    mx.eval(model.parameters())
    warn_if_slow_on_cpu(model, source)
    return model


def warn_if_slow_on_cpu(model, source: str) -> None:
    """MLX's CPU backend has BLAS only for float32: say so when a half-precision or quantized model lands there."""
    if mx.default_device().type != mx.DeviceType.cpu:
        return
    kind = "quantized" if quantization_config(model) else None if model.dtype == mx.float32 else str(model.dtype)
    if kind:
        log.warning("%s is %s: on the CPU MLX runs it ~20-25x slower than float32 (one crop ~80 s instead of ~3.5 s, "
                    "BENCHMARKS.md); use a float32 model on a CPU", source, kind.replace("mlx.core.", ""))


def load_detector(path: str | Path, dtype: str | None = None):
    """The YOLOv8-pose hand detector of a converted folder, or None if it holds none."""
    path = Path(path)
    config = load_config(path)
    if "detector" not in config:
        return None
    model = YOLOPose(DetectorConfig.from_dict(config["detector"]))
    load_weights_strict(model, read_arrays(path, "detector."), str(path / MODEL_FILE))
    if dtype is not None:
        model.set_dtype(mx_dtype(dtype))
    mx.eval(model.parameters())
    return model
