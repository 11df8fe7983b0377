"""The canonical checkpoint directory: config.json + model.safetensors (+ mano.safetensors).

    config.json        {"format_version": 1, "dtype": ..., "wilor": {...}, "detector": {...}?, "source": {...},
                        "quantization": {"group_size": 64, "bits": 4, "mode": "affine", ...}?}
    model.safetensors  MLX layout, keys prefixed "wilor." and "detector.", metadata {"format": "mlx"}
    mano.safetensors   the user's MANO_RIGHT.pkl, converted locally (never bundled)

Loading is strict: no renaming, missing or extra keys raise. "dtype" is the float dtype of the stored
weights; "quantization" (see mlx_hands.quantize) describes the WiLoR network's quantized linears,
which are rebuilt before the strict load.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from .config import DetectorConfig, WiLoRConfig
from .quantize import apply_quantization, parse_quantize, quantization_config, quantize_model

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
    quantization: dict | None = None,
) -> Path:
    """Write a converted directory. Arrays may be numpy or mlx (quantized WiLoR arrays must be mlx or
    numpy uint32 as nn.QuantizedLinear holds them); floats are cast to `dtype`. `quantization` is the
    entry mlx_hands.quantize.quantize_model returned, recorded in config.json."""
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
        if quantization:
            config["quantization"] = quantization
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


def build_wilor(config: WiLoRConfig, arrays: dict[str, mx.array], quantization: dict | None, source: str):
    """WiLoR(config) with `arrays` loaded strictly; quantized layers are rebuilt first (mlx_hands.quantize)."""
    from .models.wilor import WiLoR

    model = WiLoR(config)
    apply_quantization(model, arrays, quantization, source)
    load_weights_strict(model, arrays, source)
    return model


def set_precision(model, dtype: str | None = None, quantize=None, source: str = "the model") -> None:
    """Cast the float weights to `dtype`, then quantize (mlx_hands.quantize.parse_quantize forms).

    Asking a quantized model for the quantization it already has is a no-op; other settings raise.
    """
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        model.set_dtype(DTYPES[dtype])
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
                         f"model with quantize=, or a directory written with those settings")
    quantize_model(model, q["bits"], q["group_size"], mode=q["mode"], overrides=q.get("overrides"),
                   uniform=bool(q.get("uniform")), calibration=q.get("calibration"))


def load_wilor(path: str | Path, *, mano_path: str | Path | None = None, dtype: str | None = None, quantize=None):
    """Load WiLoR from a converted directory. MANO from `mano_path` or the directory's mano.safetensors.

    The stored precision (float dtype, quantization) is read from config.json; dtype= casts the float
    weights and quantize= (4, 8 or {"bits", "group_size"}) quantizes a float model after loading.
    """
    path = Path(path)
    config = load_config(path)
    if "wilor" not in config:
        raise ValueError(f"{path} holds no WiLoR weights (config.json has no 'wilor' entry)")
    source = f"{path / MODEL_FILE}"
    model = build_wilor(WiLoRConfig.from_dict(config["wilor"]), _load_arrays(path, "wilor."),
                        config.get("quantization"), source)
    set_precision(model, dtype, quantize, source)
    mano_file = Path(mano_path) if mano_path is not None else path / MANO_FILE
    if not mano_file.is_file():
        raise FileNotFoundError(
            f"MANO model not found at {mano_file}. MANO is licensed separately and never bundled: get "
            f"MANO_RIGHT.pkl from https://mano.is.tue.mpg.de and convert it with "
            f"`mlx-hands convert --mano MANO_RIGHT.pkl -o {path}`, or pass mano_path=")
    model.mano.set_data(read_mano_file(mano_file))
    mx.eval(model.parameters())
    warn_if_slow_on_cpu(model, source)
    return model


def warn_if_slow_on_cpu(model, source: str) -> None:
    """MLX's CPU backend has BLAS only for float32: say so when a half-precision or quantized model lands there."""
    if mx.default_device().type != mx.DeviceType.cpu:
        return
    from .quantize import quantization_config

    kind = "quantized" if quantization_config(model) else None if model.dtype == mx.float32 else str(model.dtype)
    if kind:
        log.warning("%s is %s: on the CPU MLX runs it ~20-25x slower than float32 (one crop ~80 s instead of ~3.5 s, "
                    "BENCHMARKS.md); use a float32 model on a CPU", source, kind.replace("mlx.core.", ""))


def load_seed_wilor(path: str | Path, *, mano_path: str | Path | None = None, dtype: str | None = None,
                    quantize=None, config: WiLoRConfig | None = None):
    """Load the seed project's weights (lyonsno/wilor-mlx: wilor-mlx.safetensors, wilor-mlx-int4.safetensors).

    Their layout is renamed in memory (mlx_hands.convert.seed); sizes are read from the tensors, the rest
    of the configuration (head count) comes from `config` (default: the released model's). MANO comes
    from `mano_path` (MANO_RIGHT.pkl, mano.safetensors, or wilor-mlx's own mano.npz), or from the file
    itself if it carries a complete MANO model.
    """
    from .convert.seed import seed_mano, split_seed
    from .convert.wilor import infer_config

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"wilor-mlx weights not found: {path}")
    try:
        arrays = mx.load(str(path))
    except Exception as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None
    wilor, mano_raw = split_seed(arrays, str(path))
    model = build_wilor(infer_config(wilor, config or WiLoRConfig()), wilor, None, str(path))
    set_precision(model, dtype, quantize, str(path))
    if mano_path is not None:
        mano = read_mano_file(Path(mano_path))
    else:
        mano = seed_mano(mano_raw, str(path))
        if mano is None:
            raise FileNotFoundError(
                f"{path.name} carries no MANO model (MANO is licensed separately): pass mano_path= with your "
                f"MANO_RIGHT.pkl from https://mano.is.tue.mpg.de, a converted mano.safetensors, or the "
                f"mano.npz that wilor-mlx cached (~/.cache/wilor-mlx/mano.npz)")
    model.mano.set_data(mano)
    mx.eval(model.parameters())
    return model


def read_mano_file(path: Path) -> dict:
    """Canonical MANO arrays from mano.safetensors, MANO_RIGHT.pkl or an .npz (see convert.mano)."""
    from .convert.mano import load_mano

    return load_mano(path) if Path(path).suffix == ".safetensors" else _read_mano_any(Path(path))


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
