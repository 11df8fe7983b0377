"""Synthetic test data shared by the tests: a procedural MANO-sized hand, writers for the original
file formats (MANO release pickle, Lightning checkpoint) and a malicious pickle.

Plain functions; import them as ``from synth import make_mano``. Nothing here is MANO data.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np

# MANO joint order: wrist, index(1-3), middle(4-6), pinky(7-9), ring(10-12), thumb(13-15)
MANO_PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], dtype=np.int32)
FINGERTIP_IDS = {"thumb": 744, "index": 320, "middle": 443, "ring": 554, "pinky": 671}
NUM_VERTS, NUM_FACES, NUM_JOINTS, NUM_BETAS, NUM_POSE_BASIS = 778, 1538, 16, 10, 135

_PALM_LEN, _PALM_THICK = 0.05, 0.022
_FINGER_W, _GAP_W = 0.015, 0.003
# name, first joint, rings along the finger, length (m); 4 * 16 palm rings + sum(rings) = 193 gives 778 verts
_FINGERS = [
    ("index", 1, 26, 0.045),
    ("middle", 4, 28, 0.050),
    ("ring", 10, 26, 0.046),
    ("pinky", 7, 22, 0.036),
    ("thumb", 13, 27, 0.042),
]
_PALM_RINGS, _THUMB_RING = 16, 4
_SEGMENTS = (0.4, 0.7)  # phalanx boundaries as fractions of finger length (PIP, DIP)


def _tube_faces(a: list[int], b: list[int]) -> list[tuple[int, int, int]]:
    n = len(a)
    out = []
    for i in range(n):
        j = (i + 1) % n
        out += [(a[i], a[j], b[j]), (a[i], b[j], b[i])]
    return out


def _hand_mesh():
    """Vertices (V, 3), faces (F, 3) in build order, fingertip build ids, per-vertex (joint, s) tags.

    Topology: one open surface (a disk with a 16-vertex wrist hole), so F = 2V - 18 = 1538 as in MANO.
    The palm is a 16-gon tube along +y; four fingers are extruded from quads of its top cap and the
    thumb from a quad on its -x side. Palm faces -z, fingers point +y.
    """
    verts: list[np.ndarray] = []
    tags: list[tuple[int, float]] = []  # (first joint of the chain or 0 for palm, s in [0, 1] along it)

    def add(p, tag):
        verts.append(np.asarray(p, dtype=np.float64))
        tags.append(tag)
        return len(verts) - 1

    xs = np.cumsum([0.0] + [_FINGER_W, _GAP_W] * 3 + [_FINGER_W])
    xs -= xs.mean()
    rings = []
    for r, y in enumerate(np.linspace(0.0, _PALM_LEN, _PALM_RINGS)):
        taper = 0.8 + 0.2 * y / _PALM_LEN  # narrower wrist
        front = [add((x * taper, y, -_PALM_THICK / 2), (0, 0.0)) for x in xs]
        back = [add((x * taper, y, _PALM_THICK / 2), (0, 0.0)) for x in xs[::-1]]
        rings.append(front + back)  # front x ascending, back x descending; 15 -> 0 is the -x side

    faces: list[tuple[int, int, int]] = []
    top = rings[-1]
    n = len(xs)

    def front_back(i):  # (front vertex, back vertex) above xs[i] on the top ring
        return top[i], top[2 * n - 1 - i]

    # Palm side walls, with one quad on the -x side left open for the thumb.
    for r in range(_PALM_RINGS - 1):
        a, b = rings[r], rings[r + 1]
        tri = _tube_faces(b, a)  # ring order is clockwise seen from +y, so swap for outward normals
        if r == _THUMB_RING:
            tri = [t for t in tri if not ({a[0], a[-1]} <= set(t) or {b[0], b[-1]} <= set(t))]
        faces += tri

    def extrude(base: list[int], axis: np.ndarray, length: float, nrings: int, joint: int):
        base_pts = np.array([verts[i] for i in base])
        centre = base_pts.mean(0)
        prev, all_rings = base, [base]
        for k in range(1, nrings + 1):
            s = k / (nrings + 1)
            shrink = 1.0 - 0.35 * s
            cur = [add(centre + axis * length * s + (p - centre) * shrink, (joint, s)) for p in base_pts]
            faces.extend(_tube_faces(prev, cur))
            prev = cur
            all_rings.append(cur)
        tip = add(centre + axis * length, (joint, 1.0))
        faces.extend((prev[i], prev[(i + 1) % len(prev)], tip) for i in range(len(prev)))
        # joint rings: base (MCP / CMC) and the rings nearest the two phalanx boundaries
        joint_rings = [base] + [all_rings[round(e * (nrings + 1))] for e in _SEGMENTS]
        return tip, joint_rings

    tips, joint_rings = {}, {0: rings[0]}
    for slot, (name, joint, nrings, length) in zip((0, 2, 4, 6), _FINGERS[:4]):
        f0, b0 = front_back(slot)
        f1, b1 = front_back(slot + 1)
        # counter-clockwise seen from +y: back-left, back-right, front-right, front-left
        tips[name], jr = extrude([b0, b1, f1, f0], np.array([0.0, 1.0, 0.0]), length, nrings, joint)
        joint_rings.update({joint + k: r for k, r in enumerate(jr)})
    # gaps between fingers on the top cap; the middle one gets a centre vertex (keeps V = 778)
    for slot in (1, 3, 5):
        fl, bl = front_back(slot)
        fr, br = front_back(slot + 1)
        if slot == 3:
            c = add(np.mean([verts[i] for i in (fl, bl, fr, br)], 0), (0, 0.0))
            faces += [(br, fr, c), (fr, fl, c), (fl, bl, c), (bl, br, c)]
        else:
            faces += [(br, fr, fl), (br, fl, bl)]

    a, b = rings[_THUMB_RING], rings[_THUMB_RING + 1]
    axis = np.array([-0.8, 0.6, -0.2])
    name, joint, nrings, length = _FINGERS[4]
    # counter-clockwise seen from the thumb's outward axis (-x)
    tips[name], jr = extrude([a[0], a[-1], b[-1], b[0]], axis / np.linalg.norm(axis), length, nrings, joint)
    joint_rings.update({joint + k: r for k, r in enumerate(jr)})

    return np.array(verts), np.array(faces, dtype=np.int64), tips, joint_rings, tags


def make_mano(seed: int = 0) -> dict[str, np.ndarray]:
    """A procedural hand in the canonical MANO layout (see mlx_hands.convert.mano), metres.

    v_template (778, 3), shapedirs (778, 3, 10), posedirs (135, 2334), J_regressor (16, 778),
    lbs_weights (778, 16), parents (16,) int32, faces (1538, 3) int32. Fingertips at the MANO ids
    (thumb 744, index 320, middle 443, ring 554, pinky 671). Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    verts, faces, tips, joint_rings, tags = _hand_mesh()
    V = len(verts)
    assert V == NUM_VERTS and len(faces) == NUM_FACES, (V, len(faces))

    # Permute build order so the fingertips land on MANO's vertex ids.
    new_id = np.full(V, -1, dtype=np.int64)
    for name, vid in FINGERTIP_IDS.items():
        new_id[tips[name]] = vid
    free = np.setdiff1d(np.arange(V), list(FINGERTIP_IDS.values()))
    new_id[new_id < 0] = free
    order = np.argsort(new_id)
    v = verts[order]
    f = new_id[faces]
    tags = [tags[i] for i in order]

    # Skinning: palm follows the wrist; each phalanx follows its joint with a short linear blend.
    W = np.zeros((V, NUM_JOINTS))
    blend = 0.08
    for i, (j0, s) in enumerate(tags):
        if j0 == 0:
            W[i, 0] = 1.0
            continue
        w = np.zeros(3)
        w[0] = 1.0
        for k, edge in enumerate(_SEGMENTS):
            t = np.clip((s - edge + blend / 2) / blend, 0.0, 1.0)  # 0 before the boundary, 1 after
            w[k + 1] = t
            w[k] *= 1.0 - t
        W[i, j0 : j0 + 3] = w / w.sum()

    # Joint regressor: each row averages one ring of vertices whose centre is the joint.
    Jreg = np.zeros((NUM_JOINTS, V))
    for j, ring in joint_rings.items():
        Jreg[j, new_id[ring]] = 1.0 / len(ring)
    assert np.allclose(Jreg.sum(1), 1.0)

    J = Jreg @ v
    scale = v - J[0]
    shapedirs = rng.normal(scale=1e-3, size=(V, 3, NUM_BETAS))
    shapedirs[:, :, 0] = scale * 0.05  # beta 0 ~ overall size
    posedirs = rng.normal(scale=1e-4, size=(NUM_POSE_BASIS, V * 3))
    return {
        "v_template": v.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": posedirs.astype(np.float32),
        "J_regressor": Jreg.astype(np.float32),
        "lbs_weights": W.astype(np.float32),
        "parents": MANO_PARENTS.copy(),
        "faces": f.astype(np.int32),
    }


# --------------------------------------------------------------------------------------------
# Original-format writers


@contextlib.contextmanager
def _fake_modules(spec: dict[str, dict[str, object]]):
    """Temporarily make ``module.name`` resolve to the given objects, so pickle writes those names."""
    parents = {".".join(m.split(".")[:i]) for m in spec for i in range(1, m.count(".") + 1)}
    parents = {p for p in parents if p not in sys.modules and p not in spec}
    saved = {m: sys.modules.get(m) for m in list(spec) + sorted(parents)}
    try:
        for p in parents:
            sys.modules[p] = types.ModuleType(p)
        for mod, names in spec.items():
            m = types.ModuleType(mod)
            for name, obj in names.items():
                setattr(m, name, obj)
                if isinstance(obj, type) or callable(obj):
                    obj.__module__, obj.__qualname__ = mod, name
            sys.modules[mod] = m
        yield
    finally:
        for mod, old in saved.items():
            if old is None:
                sys.modules.pop(mod, None)
            else:
                sys.modules[mod] = old


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: str and bytes as (SHORT_)BINSTRING, not BINUNICODE/_codecs."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_binstring(self, data: bytes, obj):
        n = len(data)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + data)
        self.memoize(obj)

    def save_bytes(self, obj):
        self._save_binstring(obj, obj)

    def save_str(self, obj):
        if obj.isascii():
            self._save_binstring(obj.encode("ascii"), obj)
        else:
            pickle._Pickler.save_str(self, obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:  # numpy 1.x names and layout, as in the release
            rec = sys.modules["numpy.core.multiarray"]._reconstruct
            dt = obj.dtype
            dstate = (3, "<" if dt.byteorder in "<=" and dt.itemsize > 1 else "|", None, None, None, -1, -1, 0)
            dtype_obj = _Py2Dtype(dt.str[1:], dstate)
            return rec, (np.ndarray, (0,), b"b"), (1, obj.shape, dtype_obj, False, np.ascontiguousarray(obj).tobytes())
        return NotImplemented


class _Py2Dtype:
    def __init__(self, spec, state):
        self.spec, self.state = spec, state

    def __reduce__(self):
        return sys.modules["numpy"].dtype, (self.spec, 0, 1), self.state


class _FakeCh:
    def __init__(self, x):
        # attribute set of a plain chumpy.ch.Ch after construction (see the shared sample)
        self._make_sparse = False
        self._dirty_vars = {"x"}
        self._itr = None
        self._depends_on_deps = {}
        self._make_dense = False
        self.x = x


class _FakeCsc:
    def __init__(self, dense: np.ndarray):
        cols = [np.nonzero(dense[:, j])[0] for j in range(dense.shape[1])]
        self.indices = np.concatenate(cols).astype(np.int32)
        self.indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int32)
        self.maxprint = 50
        self._shape = tuple(int(s) for s in dense.shape)
        self.data = np.concatenate([dense[c, j] for j, c in enumerate(cols)])


def mano_release_dict(arrays: dict[str, np.ndarray], seed: int = 0) -> dict[str, object]:
    """Canonical arrays → the release's plain numbers (float64, uint32 faces, kintree with 4294967295)."""
    rng = np.random.default_rng(seed + 1)
    V, J = arrays["v_template"].shape[0], arrays["parents"].shape[0]
    parents = arrays["parents"].astype(np.int64)
    parents[parents < 0] = 4294967295
    jreg = arrays["J_regressor"].astype(np.float64)
    vt = arrays["v_template"].astype(np.float64)
    comps = np.linalg.qr(rng.normal(size=(45, 45)))[0]
    return {
        "hands_components": comps,
        "f": arrays["faces"].astype(np.uint32),
        "J_regressor": jreg,
        "kintree_table": np.stack([parents, np.arange(J)]).astype(np.int64),
        "J": jreg @ vt,
        "bs_style": "lbs",
        "hands_coeffs": rng.normal(scale=0.3, size=(1554, 45)),
        "weights": arrays["lbs_weights"].astype(np.float64),
        "posedirs": arrays["posedirs"].astype(np.float64).T.reshape(V, 3, -1),
        "hands_mean": rng.normal(scale=0.1, size=45),
        "v_template": vt,
        "shapedirs": arrays["shapedirs"].astype(np.float64),
        "bs_type": "lrotmin",
    }


def write_mano_pkl(path, arrays: dict[str, np.ndarray]) -> Path:
    """Write canonical MANO arrays as the original MANO_RIGHT.pkl: protocol 2 as Python 2 wrote it,
    chumpy.ch.Ch values, a scipy.sparse.csc.csc_matrix J_regressor, numpy 1.x array names. Needs
    neither chumpy nor scipy (fake classes are registered while pickling)."""
    path = Path(path)
    rel = mano_release_dict(arrays)
    Ch = type("Ch", (_FakeCh,), {})
    Csc = type("csc_matrix", (_FakeCsc,), {})

    def _reconstruct(*a):  # never called: only its name is pickled
        raise AssertionError

    out = {}
    for k, v in rel.items():
        if k in ("shapedirs", "J", "v_template", "weights", "posedirs"):
            v = Ch(v)
        elif k == "J_regressor":
            v = Csc(v)
        out[k] = v
    buf = io.BytesIO()
    with _fake_modules({"chumpy.ch": {"Ch": Ch}, "scipy.sparse.csc": {"csc_matrix": Csc},
                        "numpy.core.multiarray": {"_reconstruct": _reconstruct}}):
        _Py2Pickler(buf, protocol=2).dump(out)
    path.write_bytes(buf.getvalue())
    return path


class _FakeCfgNode(dict):
    """Pickles like yacs.config.CfgNode: a dict subclass with a few flags in __dict__."""

    def __init__(self, init=None):
        super().__init__(init or {})
        self.__dict__["__immutable__"] = False
        self.__dict__["__deprecated_keys__"] = set()
        self.__dict__["__renamed_keys__"] = {}
        self.__dict__["__new_allowed__"] = False


def write_torch_checkpoint(path, state_dict: dict[str, np.ndarray], extra: dict | None = None) -> Path:
    """``torch.save`` a Lightning-style checkpoint of numpy arrays (needs torch; imported here).

    Holds epoch/global_step/version, ``state_dict`` (OrderedDict of tensors), ``hyper_parameters``
    with a yacs-like CfgNode (class ``yacs.config.CfgNode``), ``optimizer_states`` (Adam-like moments
    per parameter) and callback/loop metadata; ``extra`` entries are added at the top level.
    """
    import torch

    path = Path(path)
    sd = collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in state_dict.items())
    CfgNode = type("CfgNode", (_FakeCfgNode,), {})
    with _fake_modules({"yacs.config": {"CfgNode": CfgNode}}):
        cfg = CfgNode({"MODEL": CfgNode({"IMAGE_SIZE": 256, "BBOX_SHAPE": None}),
                       "MANO": CfgNode({"NUM_HAND_JOINTS": 15, "MODEL_PATH": "./mano_data"})})
        params = [k for k, v in sd.items() if v.is_floating_point()]
        ckpt = {
            "epoch": 3,
            "global_step": 1234,
            "pytorch-lightning_version": "2.1.0",
            "state_dict": sd,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": torch.tensor(0.5),
                                                               "best_model_path": "/x/last.ckpt"}},
            "optimizer_states": [{
                "state": {i: {"step": torch.tensor(1234.0), "exp_avg": torch.zeros_like(sd[k]),
                              "exp_avg_sq": torch.ones_like(sd[k])} for i, k in enumerate(params)},
                "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999), "params": list(range(len(params)))}],
            }],
            "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": {"cfg": cfg, "init_renderer": False},
        }
        if extra:
            ckpt.update(extra)
        torch.save(ckpt, path)
    return path


class _Evil:
    def __init__(self, marker):
        self.cmd = f"touch {marker}"

    def __reduce__(self):
        import os

        return os.system, (self.cmd,)


def write_malicious_pickle(path, marker, *, zip_checkpoint: bool = False) -> Path:
    """A pickle whose loading would run ``os.system("touch <marker>")``. With ``zip_checkpoint``
    it is the ``data.pkl`` of a zip laid out like a torch checkpoint (no torch needed)."""
    path = Path(path)
    payload = pickle.dumps({"state_dict": {"w": 1.0}, "evil": _Evil(marker)}, protocol=2)
    if not zip_checkpoint:
        path.write_bytes(payload)
        return path
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return path


def global_call_pickle(module: str, name: str, arg: str) -> bytes:
    """Protocol-2 bytes that call ``module.name(arg)`` when loaded (GLOBAL + REDUCE)."""
    a = arg.encode()
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + pickle.BINUNICODE + struct.pack("<I", len(a)) + a
            + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)


def write_tiny_model(folder, *, seed: int = 0, detector: bool = True, imgsz: int = 160, source: dict | None = None):
    """mlx_hands.synthetic.write_model with the 2-block WiLoR, a narrow detector at imgsz and the procedural hand
    as MANO -> the folder."""
    import dataclasses

    from mlx_hands.synthetic import TINY, TINY_DETECTOR, write_model

    return write_model(folder, TINY, dataclasses.replace(TINY_DETECTOR, imgsz=imgsz) if detector else None,
                       mano=make_mano(seed), seed=seed, source=source)
