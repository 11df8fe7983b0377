"""Precision variants of WiLoR, in memory: MLX affine weight quantization of the ViT's transformer linears.

Quantization is data, as in mlx-lm: `quantize_model` swaps the chosen `nn.Linear` layers for
`nn.QuantizedLinear` and returns the entry that config.json records,

    "quantization": {"group_size": 64, "bits": 4, "mode": "affine",
                     "backbone.blocks.0.attn.qkv": {"group_size": 64, "bits": 8, "mode": "affine"}, ...}

(layer paths relative to the WiLoR network; per-layer entries only where a layer differs from the
default). Loading rebuilds the same structure before the strict load: a layer is quantized when
`f"{path}.scales"` is among the weights, with bits and group size read from the tensor shapes and
checked against that entry (`apply_quantization`).

What is quantized: the four linears of each transformer block (qkv, proj, fc1, fc2), 97% of the
weights. The patch embedding, token embeddings, decoders, RefineNet, norms and MANO stay in float:
they are small, and the decoders map features straight to pose, shape and camera.

Rounding: without calibration data each weight goes to its nearest level (MLX's own `nn.quantize`).
With calibration crops (`calibration=`, `mlx-hands quantize --calibrate`), GPTQ (`mlx_hands.quant.gptq`)
chooses the levels: layer by layer, columns are rounded in turn and each rounding error is compensated
in the columns not yet rounded, weighted by the inputs' second moments H = E[x x^T] measured on the
crops, which minimises the layer's output error on inputs like them. The result is the same MLX affine
format (packed levels, per-group scales and biases); only the chosen levels differ. Measured on
synthetic weights it cut the 4-bit vertex error ~10x (BENCHMARKS.md).

By default the layers that measured most sensitive stay at higher precision (`sensitive_overrides`;
benchmarks/accuracy.py --scan, BENCHMARKS.md): rounding error made early in the network travels
through every later block, so the first blocks weigh most, and attn.proj carries the most error per
byte. `uniform=True` quantizes every transformer linear alike.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from ..models import mx_dtype
from ..models.wilor import WiLoR
from .gptq import check_calibration, gptq_parts

log = logging.getLogger(__name__)

BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
MODE = "affine"
DEFAULT_BITS, DEFAULT_GROUP_SIZE = 4, 64
# bit widths MLX's affine kernels accept, for reading files written elsewhere (e.g. the seed project's)
_READABLE_BITS = (2, 3, 4, 5, 6, 8)
_BLOCK_LINEAR = re.compile(r"backbone\.blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)")
_SETTINGS = ("group_size", "bits", "mode")


def check_settings(bits: int, group_size: int, mode: str = MODE) -> None:
    """Raise ValueError unless (bits, group_size, mode) is a supported combination."""
    if mode != MODE:
        raise ValueError(f"quantization mode must be {MODE!r}, got {mode!r}")
    if isinstance(bits, bool) or bits not in BITS:
        raise ValueError(f"quantization bits must be one of {list(BITS)}, got {bits!r}")
    if isinstance(group_size, bool) or group_size not in GROUP_SIZES:
        raise ValueError(f"quantization group size must be one of {list(GROUP_SIZES)}, got {group_size!r}")


def parse_quantize(quantize) -> dict | None:
    """`quantize=` as users pass it -> {"bits", "group_size", "mode"} or None.

    Accepts None/False, True (4-bit, group 64), a bit width (4 or 8) or a dict with "bits" and
    optionally "group_size", "mode", "uniform", "overrides" and "calibration" (see quantize_model).
    """
    if quantize is None or quantize is False:
        return None
    if quantize is True:
        q = {"bits": DEFAULT_BITS}
    elif isinstance(quantize, int):
        q = {"bits": quantize}
    elif isinstance(quantize, dict):
        unknown = set(quantize) - {"bits", "group_size", "mode", "overrides", "uniform", "calibration"}
        if unknown:
            raise ValueError(f"quantize: unknown keys {sorted(unknown)}; expected bits, group_size, mode, uniform, "
                             f"overrides, calibration")
        q = dict(quantize)
    else:
        raise ValueError(f"quantize must be None, True, 4, 8 or a dict with 'bits' and 'group_size', got {quantize!r}")
    q.setdefault("bits", DEFAULT_BITS)
    q.setdefault("group_size", DEFAULT_GROUP_SIZE)
    q.setdefault("mode", MODE)
    check_settings(q["bits"], q["group_size"], q["mode"])
    return q


def is_quantizable(path: str, module: nn.Module, group_size: int) -> bool:
    """The default policy: transformer-block linears whose input width divides into groups."""
    return (isinstance(module, nn.Linear) and _BLOCK_LINEAR.fullmatch(path) is not None
            and module.weight.shape[1] % group_size == 0)


def quantized_layers(model: nn.Module) -> dict[str, dict]:
    """Path -> {"group_size", "bits", "mode"} of every quantized linear in `model`."""
    return {path: {"group_size": m.group_size, "bits": m.bits, "mode": m.mode}
            for path, m in model.named_modules() if isinstance(m, nn.QuantizedLinear)}


def quantization_config(model: nn.Module) -> dict | None:
    """The config.json entry describing `model`'s quantization (None if it has none): the lowest bit
    width present, with its most common group size, as the default; the other layers listed by path."""
    layers = quantized_layers(model)
    if not layers:
        return None
    low = min(s["bits"] for s in layers.values())
    common = Counter(tuple(s[k] for k in _SETTINGS) for s in layers.values()
                     if s["bits"] == low).most_common(1)[0][0]
    entry = dict(zip(_SETTINGS, common))
    for path in sorted(layers):
        if tuple(layers[path][k] for k in _SETTINGS) != common:
            entry[path] = layers[path]
    return entry


def _blocks(model: nn.Module) -> int:
    return len(model.backbone.blocks) if hasattr(model, "backbone") else 0


def sensitive_overrides(model: nn.Module, bits: int, group_size: int = DEFAULT_GROUP_SIZE) -> dict:
    """The default higher-precision layers for `bits`, scaled to the model's depth (measured on the
    32-block model, BENCHMARKS.md):

    8-bit: the first 1/16 of the blocks (2 of 32) stay in float.
    4-bit: the first quarter of the blocks (8 of 32) and every attn.proj (8% of the weights) at 8 bits.
    """
    depth = _blocks(model)
    kinds = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    if bits == 8:
        return {f"backbone.blocks.{i}.{k}": False for i in range(math.ceil(depth / 16)) for k in kinds}
    if bits == 4:
        eight = {"bits": 8, "group_size": group_size}
        out = {f"backbone.blocks.{i}.{k}": dict(eight) for i in range(math.ceil(depth / 4)) for k in kinds}
        out.update({f"backbone.blocks.{i}.attn.proj": dict(eight) for i in range(depth)})
        return out
    return {}


def quantize_model(
    model: nn.Module,
    bits: int = DEFAULT_BITS,
    group_size: int = DEFAULT_GROUP_SIZE,
    *,
    mode: str = MODE,
    overrides: dict[str, dict | bool] | None = None,
    uniform: bool = False,
    calibration=None,
) -> dict:
    """Quantize `model`'s transformer-block linears in place; return the config.json entry.

    The most sensitive layers stay at higher precision (`sensitive_overrides`) unless uniform=True.
    overrides (applied on top): layer path -> {"bits": 8, "group_size": 64} to keep a layer at other
    settings, or False to keep it in float. The non-quantized weights keep their dtype (cast the model
    first with `model.set_dtype` for a float16/bfloat16 remainder, as mlx-lm does).
    calibration: crops (N, 256, 256, 3), RGB 0..255, uint8 or float (real hand crops for real weights;
    16-64 is plenty): the levels are then chosen by GPTQ instead of rounding to nearest.
    """
    check_settings(bits, group_size, mode)
    if calibration is not None:
        calibration = check_calibration(calibration, model)
    existing = quantization_config(model)
    if existing is not None:
        raise ValueError(f"the model is already quantized ({_describe(existing)}); quantize a float model instead "
                         f"(load it from a float checkpoint)")
    user = dict(overrides or {})
    overrides = {**({} if uniform else sensitive_overrides(model, bits, group_size)), **user}
    for path, o in overrides.items():
        if isinstance(o, dict):
            check_settings(o.get("bits", bits), o.get("group_size", group_size), o.get("mode", mode))
        elif o is not False:
            raise ValueError(f"overrides[{path!r}] must be a dict of settings or False, got {o!r}")
    modules = dict(model.named_modules())
    unknown = [p for p in overrides if not isinstance(modules.get(p), nn.Linear)]
    if unknown:
        raise ValueError(f"overrides name no linear layer of the model: {unknown[:5]}")

    def predicate(path: str, module: nn.Module):
        o = overrides.get(path)
        if o is False:
            return False
        if isinstance(o, dict):
            s = {"group_size": group_size, "bits": bits, "mode": mode, **o}
            if module.weight.shape[1] % s["group_size"]:
                if path not in user:
                    return False  # the default policy skips what cannot be grouped, as for the rest
                raise ValueError(f"{path}: input width {module.weight.shape[1]} is not a multiple of group size "
                                 f"{s['group_size']}")
            return s
        if is_quantizable(path, module, group_size):
            return {"group_size": group_size, "bits": bits, "mode": mode}
        return False

    chosen = {path: settings for path, m in model.named_modules()
              if isinstance(m, nn.Linear) and (settings := predicate(path, m))}
    if not chosen:
        raise ValueError(f"no layer of the model can be quantized with group size {group_size}")
    if calibration is not None:
        gptq_levels = gptq_parts(model, chosen, calibration)
    nn.quantize(model, class_predicate=lambda path, m: chosen.get(path, False))
    if calibration is not None:
        model.update(tree_unflatten([(f"{path}.{k}", v) for path, arrays in gptq_levels.items()
                                     for k, v in arrays.items()]))
        mx.eval(model.parameters())
    entry = quantization_config(model)
    log.info("quantized %d layers (%s)", len(quantized_layers(model)), _describe(entry))
    return entry


def _describe(entry: dict) -> str:
    extra = sum(1 for k in entry if k not in _SETTINGS)
    more = f", {extra} layers at other settings" if extra else ""
    return f"{entry['bits']}-bit, group size {entry['group_size']}, {entry.get('mode', MODE)}{more}"


def _natural(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in path.split(".")]


def layer_settings(entry: dict | None, path: str) -> dict | None:
    """The settings that `entry` (a config.json quantization entry) gives the layer at `path`."""
    if not entry:
        return None
    s = entry.get(path, {k: entry[k] for k in _SETTINGS if k in entry})
    return None if s is False else {"mode": MODE, **s}


def infer_layer(path: str, in_dims: int, weight_shape, scales_shape, source: str) -> dict:
    """Bits and group size of a quantized linear from its packed weight (out, in * bits / 32) and
    scales (out, in / group_size), given the float layer's input width."""
    packed, groups = weight_shape[-1], scales_shape[-1]
    bits, rem = divmod(packed * 32, in_dims)
    if rem or bits not in _READABLE_BITS or not groups or in_dims % groups or len(scales_shape) != 2 \
            or scales_shape[0] != weight_shape[0]:
        raise ValueError(f"{source}: {path} has quantized weight {tuple(weight_shape)} and scales "
                         f"{tuple(scales_shape)}, which fit no bit width and group size for a layer with "
                         f"{in_dims} inputs (the file belongs to another model configuration)")
    return {"group_size": in_dims // groups, "bits": bits, "mode": MODE}


def apply_quantization(model: nn.Module, weights: dict, quantization: dict | None, source: str) -> dict | None:
    """Rebuild the quantized structure that `weights` were saved from (before a strict load).

    A linear is quantized when f"{path}.scales" is in `weights`; its bits and group size come from
    the shapes and must agree with `quantization` (the config.json entry, None for files that carry
    no config). Returns the entry describing the rebuilt model.
    """
    if quantization:
        mode = quantization.get("mode", MODE)
        if mode != MODE:
            raise ValueError(f"{source}: quantization mode {mode!r} is not supported (expected {MODE!r})")
    plan = {}
    for path, m in sorted(model.named_modules(), key=lambda pm: _natural(pm[0])):
        if f"{path}.scales" not in weights:
            continue
        if not isinstance(m, nn.Linear):
            raise ValueError(f"{source}: {path} carries quantization scales but is not a linear layer")
        w = weights.get(f"{path}.weight")
        if w is None:
            raise ValueError(f"{source}: {path}.scales without {path}.weight")
        found = infer_layer(path, m.weight.shape[1], w.shape, weights[f"{path}.scales"].shape, source)
        want = layer_settings(quantization, path)
        if quantization and want != found:
            said = "float" if want is None else f"{want['bits']}-bit with group size {want['group_size']}"
            raise ValueError(f"{source}: {path} is stored {found['bits']}-bit with group size {found['group_size']}, "
                             f"but config.json says {said} (the weights and config.json do not belong together)")
        plan[path] = found
    if quantization and not plan:
        raise ValueError(f"{source}: config.json says the model is quantized ({_describe(quantization)}) but the "
                         f"weights carry no quantization scales")
    if plan:
        nn.quantize(model, class_predicate=lambda p, m: plan.get(p, False))
    return quantization_config(model)


def quantize_arrays(arrays: dict, config, bits: int, group_size: int, dtype: str = "float32",
                    overrides: dict | None = None, uniform: bool = False) -> tuple[dict[str, mx.array], dict]:
    """Float WiLoR arrays (numpy or mlx, names as WiLoR(config) has them) -> (quantized arrays, config entry)."""
    model = WiLoR(config)
    model.load_weights([(k, mx.array(v)) for k, v in arrays.items()], strict=True)
    model.set_dtype(mx_dtype(dtype))
    entry = quantize_model(model, bits, group_size, overrides=overrides, uniform=uniform)
    return dict(tree_flatten(model.parameters())), entry
