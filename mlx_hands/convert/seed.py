"""The seed project's weights -> canonical arrays: lyonsno/wilor-mlx, Hub repository BasinShapers/wilor-mlx,
files `wilor-mlx.safetensors` (float32) and `wilor-mlx-int4.safetensors` (4-bit).

Their files are single safetensors already in MLX layout (convs (O, kH, kW, I), transposed convs
(O, kH, kW, I)), without a config. Only the RefineNet names differ from ours (their DeConvNet names its
layers instead of keeping the checkpoint's Sequential indices):

    refine_net.deconv.first_conv.{weight,bias}   -> refine_net.deconv.first_conv.0.*
    refine_net.deconv.branch0_conv.weight        -> refine_net.deconv.deconv.0.0.weight
    refine_net.deconv.branch0_bn.*               -> refine_net.deconv.deconv.0.1.*
    refine_net.deconv.branch1_conv0 / _bn0       -> refine_net.deconv.deconv.1.0 / .1.1
    refine_net.deconv.branch1_conv1 / _bn1       -> refine_net.deconv.deconv.1.3 / .1.4
    IMAGE_MEAN, IMAGE_STD                        checked against ImageNet's, dropped
    mano.*                                       early uploads only (since removed): used as MANO when complete

Everything else (backbone.*, refine_net.dec_*) keeps its name. Their 4-bit file stores quantized
linears exactly as MLX's nn.QuantizedLinear holds them (weight uint32 packed, scales, biases, bias),
detected by `{layer}.scales`; bits and group size follow from the shapes (mlx_hands.quantize).

Numpy only; the names map is pure renaming, so it applies to mlx arrays too. mlx_hands.hub downloads the
files and converts them once (convert(seed=...)); nothing is renamed at load.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from ..config import MANO_FINGERTIPS, MANO_TO_OPENPOSE
from ..models.wilor import WiLoR
from ..quant import apply_quantization
from ..weights import MANO_KEYS, check_mano, check_weights, read_safetensors

log = logging.getLogger(__name__)

_RENAMES = {
    "first_conv": "first_conv.0",
    "branch0_conv": "deconv.0.0",
    "branch0_bn": "deconv.0.1",
    "branch1_conv0": "deconv.1.0",
    "branch1_bn0": "deconv.1.1",
    "branch1_conv1": "deconv.1.3",
    "branch1_bn1": "deconv.1.4",
}
_DECONV = re.compile(r"refine_net\.deconv\.(\w+)\.(\w+)")
# the network's input normalisation (ImageNet, RGB); ours is fixed in models/wilor.py
_IMAGE_STATS = {"IMAGE_MEAN": (0.485, 0.456, 0.406), "IMAGE_STD": (0.229, 0.224, 0.225)}
# their MANO module's buffer names -> canonical MANO keys (convert/mano.py)
_MANO_NAMES = {"v_template": "v_template", "shapedirs": "shapedirs", "posedirs": "posedirs",
               "J_regressor": "J_regressor", "lbs_weights": "lbs_weights", "parents": "parents",
               "faces": "faces", "faces_tensor": "faces"}
_MANO_FIXED = {"extra_joints_idxs": MANO_FINGERTIPS, "joint_map": MANO_TO_OPENPOSE}


def split_seed(arrays: dict, source: str) -> tuple[dict, dict]:
    """Seed-layout arrays -> (WiLoR arrays under our names, MANO arrays found under `mano.*`, raw names).

    Raises ValueError for a file that is not in the seed layout or normalises its input differently.
    """
    if any(k.startswith("wilor.") for k in arrays):
        raise ValueError(f"{source} is an mlx-hands model.safetensors, not a wilor-mlx file: pass the folder "
                         f"that holds it and its config.json")
    if "backbone.pos_embed" not in arrays:
        raise ValueError(f"{source} is not a wilor-mlx weights file: backbone.pos_embed is missing "
                         f"({len(arrays)} tensors, e.g. {sorted(arrays)[:3]})")
    wilor, mano = {}, {}
    for key, a in arrays.items():
        if key in _IMAGE_STATS:
            got = np.asarray(a, np.float32).reshape(-1)
            if got.shape != (3,) or not np.allclose(got, _IMAGE_STATS[key], atol=1e-6):
                raise ValueError(f"{source}: {key} is {got.tolist()}, expected {list(_IMAGE_STATS[key])} "
                                 f"(this model normalises its input differently)")
            continue
        if key.startswith("mano."):
            mano[key[5:]] = a
            continue
        m = _DECONV.fullmatch(key)
        if m and m.group(1) in _RENAMES:
            key = f"refine_net.deconv.{_RENAMES[m.group(1)]}.{m.group(2)}"
        wilor[key] = a
    return wilor, mano


def seed_mano(raw: dict, source: str) -> dict[str, np.ndarray] | None:
    """Canonical MANO arrays from a seed file's `mano.*` entries; None when it carries none.

    A partial set (early uploads may lack faces) raises, naming what is missing.
    """
    if not raw:
        return None
    out = {}
    for name, canon in _MANO_NAMES.items():
        if name in raw:
            out[canon] = np.asarray(raw[name])
    missing = [k for k in MANO_KEYS if k not in out]
    if missing:
        raise ValueError(f"{source} carries an incomplete MANO model (no {', '.join(missing)}); pass your own "
                         f"MANO file with mano_path= (MANO_RIGHT.pkl, or wilor-mlx's mano.npz)")
    for name, expected in _MANO_FIXED.items():
        if name in raw and tuple(np.asarray(raw[name]).reshape(-1).tolist()) != tuple(expected):
            raise ValueError(f"{source}: mano.{name} is {np.asarray(raw[name]).tolist()}, expected {list(expected)}")
    parents = out["parents"].astype(np.int64)
    parents[(parents < 0) | (parents == 2**32 - 1)] = -1  # the root as stored by kintree_table (uint32 -1)
    out["parents"] = parents
    return check_mano(out, f"{source} (mano.*)")


def read_seed(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a seed safetensors file as numpy (their files are float32 and uint32)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"wilor-mlx weights not found: {path}")
    return read_safetensors(path)[0]


def inspect_arrays(arrays: dict, config, source: str) -> dict | None:
    """Check WiLoR arrays (numpy or mlx, float or quantized) against WiLoR(config) by name and shape;
    return their quantization entry (None for float weights). Nothing is computed."""
    model = WiLoR(config)
    entry = apply_quantization(model, arrays, None, source)
    check_weights(model, arrays, source)
    return entry
