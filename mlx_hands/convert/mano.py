"""MANO_RIGHT.pkl → the canonical MANO arrays (written as ``mano.safetensors`` by mlx_hands.weights), numpy only.

From the release's keys to the canonical layout (mlx_hands.weights.MANO_KEYS), with V = 778 vertices, J = 16:

    v_template   (V, 3)          the file's v_template, metres
    shapedirs    (V, 3, 10)      first 10 betas, as smplx keeps them
    posedirs     (9 (J-1), 3 V)  smplx layout: file posedirs (V, 3, P).reshape(-1, P).T
    J_regressor  (J, V)          dense
    lbs_weights  (V, J)          the file's ``weights``
    parents      (J,)            kintree_table[0] with the root as -1
    faces        (F, 3)          the file's ``f``

Follows smplx's MANO loading (vchoutas/smplx, smplx/body_models.py) for the layout.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..weights import NUM_BETAS, MANO_KEYS, check_mano, check_shape
from .safe_pickle import load_legacy_pickle

logger = logging.getLogger(__name__)

_ROOT_SENTINEL = 4294967295  # kintree_table[0, 0] in the release (uint32 -1)


def _from_release(raw: dict, source: str) -> dict[str, np.ndarray]:
    """Release keys (v_template, shapedirs, posedirs, J_regressor, weights, kintree_table, f) → canonical."""
    need = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
    missing = [k for k in need if k not in raw]
    if missing:
        raise ValueError(f"{source}: missing MANO key(s) {missing}; expected {list(need)}")
    vt = np.asarray(raw["v_template"])
    kt = np.asarray(raw["kintree_table"])
    if vt.ndim != 2 or vt.shape[1] != 3:
        raise ValueError(f"{source}: MANO key 'v_template' has shape {vt.shape}, expected (V, 3)")
    if kt.ndim != 2 or kt.shape[0] != 2:
        raise ValueError(f"{source}: MANO key 'kintree_table' has shape {kt.shape}, expected (2, J)")
    V, J = vt.shape[0], kt.shape[1]
    parents = kt[0].astype(np.int64)
    parents[(parents == _ROOT_SENTINEL) | (parents < 0)] = -1

    sd = np.asarray(raw["shapedirs"])
    check_shape(source, "shapedirs", sd, (V, 3, None))
    if sd.shape[2] < NUM_BETAS:
        raise ValueError(f"{source}: MANO key 'shapedirs' has shape {sd.shape}, expected (V, 3, >= {NUM_BETAS})")
    pd = np.asarray(raw["posedirs"])
    check_shape(source, "posedirs", pd, (V, 3, 9 * (J - 1)))
    jr = np.asarray(raw["J_regressor"])
    check_shape(source, "J_regressor", jr, (J, V))
    w = np.asarray(raw["weights"])
    check_shape(source, "weights", w, (V, J))
    f = np.asarray(raw["f"])
    check_shape(source, "f", f, (None, 3))
    return check_mano({
        "v_template": vt,
        "shapedirs": sd[:, :, :NUM_BETAS],
        "posedirs": pd.reshape(-1, pd.shape[-1]).T,
        "J_regressor": jr,
        "lbs_weights": w,
        "parents": parents,
        "faces": f.astype(np.int64),
    }, source)


def read_mano(path) -> dict[str, np.ndarray]:
    """Read ``MANO_RIGHT.pkl`` (the Python 2 release pickle; no chumpy needed) or an ``.npz`` with the
    release keys (or the canonical keys) and return the canonical layout (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MANO file not found: {path}")
    source = str(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
        if all(k in raw for k in MANO_KEYS):
            return check_mano(raw, source)
        if "J_regressor" not in raw and "J_regressor_dense" in raw:
            raw["J_regressor"] = raw["J_regressor_dense"]
    else:
        raw = load_legacy_pickle(path)
    return _from_release(raw, source)


def read_mano_mean_params(path) -> dict[str, np.ndarray]:
    """``mano_mean_params.npz`` → {"pose": (96,), "shape": (10,), "cam": (3,)} float32.
    pose is 16 joints in 6D rotation form (global orient first)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MANO mean params not found: {path}")
    expected = {"pose": (96,), "shape": (NUM_BETAS,), "cam": (3,)}
    with np.load(path, allow_pickle=False) as z:
        out = {}
        for key, shape in expected.items():
            if key not in z.files:
                raise ValueError(f"{path}: missing key {key!r}; found {sorted(z.files)}, expected {sorted(expected)}")
            a = z[key]
            if a.shape != shape:
                raise ValueError(f"{path}: key {key!r} has shape {a.shape}, expected {shape}")
            out[key] = a.astype(np.float32)
    return out
