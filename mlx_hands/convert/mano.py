"""MANO_RIGHT.pkl → the canonical MANO arrays (``mano.safetensors``), numpy only.

Canonical layout (what the MLX MANO layer consumes), with V = 778 vertices, J = 16 joints:

    v_template   (V, 3)          float32  metres
    shapedirs    (V, 3, 10)      float32  first 10 betas, as smplx keeps them
    posedirs     (9 (J-1), 3 V)  float32  smplx layout: file posedirs (V, 3, P).reshape(-1, P).T
    J_regressor  (J, V)          float32  dense
    lbs_weights  (V, J)          float32  the file's ``weights``
    parents      (J,)            int32    kintree_table[0] with the root as -1
    faces        (F, 3)          int32    the file's ``f``

Follows smplx's MANO loading (vchoutas/smplx, smplx/body_models.py) for the layout.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mlx_hands.convert.safe_pickle import load_legacy_pickle

logger = logging.getLogger(__name__)

__all__ = ["MANO_KEYS", "NUM_BETAS", "read_mano", "save_mano", "load_mano", "read_mano_mean_params"]

NUM_BETAS = 10
MANO_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "parents", "faces")
_DTYPES = {k: np.float32 for k in MANO_KEYS} | {"parents": np.int32, "faces": np.int32}
_ROOT_SENTINEL = 4294967295  # kintree_table[0, 0] in the release (uint32 -1)


def _expected_shapes(V: int, J: int, F: int | None) -> dict[str, tuple]:
    return {
        "v_template": (V, 3),
        "shapedirs": (V, 3, NUM_BETAS),
        "posedirs": (9 * (J - 1), 3 * V),
        "J_regressor": (J, V),
        "lbs_weights": (V, J),
        "parents": (J,),
        "faces": (F, 3),
    }


def _check_shape(source, key, arr, expected):
    found = tuple(arr.shape)
    ok = len(found) == len(expected) and all(e is None or e == f for e, f in zip(expected, found))
    if not ok:
        shown = tuple("F" if e is None else e for e in expected)
        raise ValueError(f"{source}: MANO key {key!r} has shape {found}, expected {shown}")


def _validate(arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Check keys, shapes and parents of canonical arrays; return them with canonical dtypes."""
    missing = [k for k in MANO_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{source}: missing MANO key(s) {missing}; expected {list(MANO_KEYS)}")
    vt, par = np.asarray(arrays["v_template"]), np.asarray(arrays["parents"])
    if vt.ndim != 2:
        raise ValueError(f"{source}: MANO key 'v_template' has shape {vt.shape}, expected (V, 3)")
    if par.ndim != 1 or par.shape[0] < 1:
        raise ValueError(f"{source}: MANO key 'parents' has shape {par.shape}, expected (J,)")
    expected = _expected_shapes(vt.shape[0], par.shape[0], None)
    out = {}
    for key in MANO_KEYS:
        a = np.asarray(arrays[key])
        _check_shape(source, key, a, expected[key])
        out[key] = np.ascontiguousarray(a, dtype=_DTYPES[key])
    p, J = out["parents"], out["parents"].shape[0]
    if p[0] != -1 or np.any(p[1:] < 0) or np.any(p[1:] >= np.arange(1, J)):
        raise ValueError(f"{source}: MANO 'parents' must be -1 for the root and an earlier joint otherwise, found "
                         f"{p.tolist()}")
    f = out["faces"]
    if f.size and (f.min() < 0 or f.max() >= vt.shape[0]):
        raise ValueError(f"{source}: MANO 'faces' index vertices outside [0, {vt.shape[0]})")
    return out


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
    _check_shape(source, "shapedirs", sd, (V, 3, None))
    if sd.shape[2] < NUM_BETAS:
        raise ValueError(f"{source}: MANO key 'shapedirs' has shape {sd.shape}, expected (V, 3, >= {NUM_BETAS})")
    pd = np.asarray(raw["posedirs"])
    _check_shape(source, "posedirs", pd, (V, 3, 9 * (J - 1)))
    jr = np.asarray(raw["J_regressor"])
    _check_shape(source, "J_regressor", jr, (J, V))
    w = np.asarray(raw["weights"])
    _check_shape(source, "weights", w, (V, J))
    f = np.asarray(raw["f"])
    _check_shape(source, "f", f, (None, 3))
    return _validate({
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
            return _validate(raw, source)
        if "J_regressor" not in raw and "J_regressor_dense" in raw:
            raw["J_regressor"] = raw["J_regressor_dense"]
    else:
        raw = load_legacy_pickle(path)
    return _from_release(raw, source)


def save_mano(arrays: dict[str, np.ndarray], path, *, source: str | None = None) -> Path:
    """Write canonical MANO arrays to ``mano.safetensors``; metadata {"format": "mlx-hands-mano",
    "source": basename of ``source`` (the file they came from), else of ``path``}."""
    from safetensors.numpy import save_file

    path = Path(path)
    arrays = _validate(arrays, "save_mano")
    meta = {"format": "mlx-hands-mano", "source": Path(source).name if source else path.name}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(path), metadata=meta)
    return path


def load_mano(path) -> dict[str, np.ndarray]:
    """Load ``mano.safetensors`` written by :func:`save_mano`, checking keys and shapes."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MANO file not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise ValueError(f"{path}: not a safetensors file ({e})") from None
    if meta.get("format") != "mlx-hands-mano":
        raise ValueError(f"{path}: metadata format is {meta.get('format')!r}, expected 'mlx-hands-mano'")
    return _validate(arrays, str(path))


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
