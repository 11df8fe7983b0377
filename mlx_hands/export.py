"""Result files from `Hand` records: JSON (all fields), NPZ (stacked arrays), OBJ / PLY meshes, GLB scenes.

Units: metres for everything 3D, image pixels for everything 2D (see `UNITS`). Meshes are written in the
full-image camera frame (vertices + cam_t; x right, y down, z forward, as OpenCV), except GLB, which glTF
defines as y up / z towards the viewer, so GLB coordinates are (x, −y, −z) of the camera frame (a rotation,
so winding and normals are unchanged). Faces are MANO's right-hand faces; left hands are mirrored meshes and
get the reversed winding so their normals point outwards.

Every writer creates missing parent folders; a folder that cannot be created or written raises one OSError
naming it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import struct
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .geometry import oriented_faces
from .types import Hand

SCHEMA = "mlx-hands/1"

UNITS = {
    "box": "pixels, x1 y1 x2 y2",
    "keypoints_2d": "pixels, (21, 2) x y, OpenPose hand order",
    "keypoints_3d": "metres, (21, 3), camera axes (x right, y down, z forward), relative to cam_t",
    "vertices": "metres, (778, 3) MANO vertices, same frame as keypoints_3d",
    "cam_t": "metres, hand translation in the full-image camera (keypoints_3d + cam_t = camera space)",
    "focal_length": "pixels, full-image camera",
    "camera_center": "pixels, principal point (absent: the image centre)",
    "global_orient": "axis-angle radians (3,), MANO root, mirrored back for left hands",
    "hand_pose": "axis-angle radians (15, 3), MANO joints, mirrored back for left hands",
    "betas": "MANO shape coefficients (10,)",
    "crop_cam": "weak-perspective (s, tx, ty) of the 256-px crop, tx sign-corrected for left hands",
    "detector_keypoints": "pixels + visibility in [0, 1], (21, 3), from the detector",
    "confidence": "detector score in [0, 1]; 1.0 for caller-supplied boxes",
    "track_id": "integer, stable across the frames of one video (null for single images)",
    "time": "seconds from the start of the video",
}

_ARRAY_FIELDS = ("box", "keypoints_2d", "keypoints_3d", "cam_t", "global_orient", "hand_pose", "betas", "crop_cam")
_OPTIONAL_ARRAYS = ("vertices", "detector_keypoints", "camera_center")


# ---------------------------------------------------------------------------------------------- files
def ensure_dir(path: str | os.PathLike) -> Path:
    """Create an output folder (and parents) and check that a file can be written in it, or raise one OSError
    that names it and says why."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OSError(f"cannot use {p} as an output folder: it is a file")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create output folder {p}: {e.strerror or e}") from None
    try:  # permissions, read-only mounts, a full disk: only a real write tells
        with tempfile.NamedTemporaryFile(dir=p, prefix=".mlx-hands-write-test-"):
            pass
    except OSError as e:
        raise OSError(f"cannot write to output folder {p}: {e.strerror or e}") from None
    return p


@contextlib.contextmanager
def output_dir(path: str | os.PathLike):
    """`with output_dir(out) as out:` checks (and creates) the output folder before any work is done, and removes
    the folders it created if they are still empty at the end (a run that failed leaves nothing behind)."""
    p = Path(path)
    new = []
    q = p
    while not q.exists() and q != q.parent:
        new.append(q)
        q = q.parent
    ensure_dir(p)
    try:
        yield p
    finally:
        for q in new:  # deepest first
            try:
                q.rmdir()  # only if empty
            except OSError:
                break


def _open(path: str | os.PathLike, mode: str):
    p = Path(path)
    ensure_dir(p.parent)
    try:
        return open(p, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}))
    except OSError as e:
        raise OSError(f"cannot write {p}: {e.strerror or e}") from e


# ---------------------------------------------------------------------------------------------- JSON
def _plain(value, decimals: int):
    """numpy values and containers -> JSON-ready Python (floats rounded to `decimals`)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc":
            return np.round(value.astype(np.float64), decimals).tolist()
        return value.tolist()
    if isinstance(value, (np.floating, float)):
        return round(float(value), decimals)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v, decimals) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, decimals) for v in value]
    return value


def to_json_dict(hand: Hand, *, include_vertices: bool = True, include_raw: bool = False, decimals: int = 6) -> dict:
    """A Hand as JSON-ready plain Python: every field (units in `UNITS`), `side`, None fields omitted.

    `extra` is kept (arrays as lists) except `extra["raw"]` (the unsmoothed values the tracker keeps),
    which is written only with `include_raw`.
    """
    d = {"side": hand.side, "is_right": bool(hand.is_right), "confidence": round(float(hand.confidence), decimals)}
    for name in _ARRAY_FIELDS:
        d[name] = _plain(np.asarray(getattr(hand, name)), decimals)
    d["focal_length"] = round(float(hand.focal_length), decimals)
    for name in _OPTIONAL_ARRAYS:
        value = getattr(hand, name, None)
        if value is not None and (include_vertices or name != "vertices"):
            d[name] = _plain(np.asarray(value), decimals)
    if hand.track_id is not None:
        d["track_id"] = int(hand.track_id)
    extra = {k: v for k, v in (hand.extra or {}).items() if include_raw or k != "raw"}
    if extra:
        d["extra"] = _plain(extra, decimals)
    return d


def from_json_dict(d: dict) -> Hand:
    """Inverse of `to_json_dict` (arrays back as float numpy arrays)."""
    kwargs = {name: np.asarray(d[name], np.float64) for name in _ARRAY_FIELDS}
    for name in _OPTIONAL_ARRAYS:
        if name in d and name in {f.name for f in dataclasses.fields(Hand)}:
            kwargs[name] = np.asarray(d[name], np.float64)
    return Hand(
        is_right=bool(d["is_right"]),
        confidence=float(d["confidence"]),
        focal_length=float(d["focal_length"]),
        track_id=d.get("track_id"),
        extra=dict(d.get("extra", {})),
        **kwargs,
    )


def results_dict(
    hands: Sequence[Hand],
    *,
    image_size: tuple[int, int] | None = None,
    source: str | os.PathLike | None = None,
    include_vertices: bool = True,
    **fields,
) -> dict:
    """The JSON document for one image: schema, source, width/height, units, hands (+ any extra `fields`)."""
    doc: dict = {"schema": SCHEMA}
    if source is not None:
        doc["image"] = str(source)
    if image_size is not None:
        doc["width"], doc["height"] = int(image_size[0]), int(image_size[1])
    doc.update(fields)
    doc["units"] = UNITS
    doc["hands"] = [to_json_dict(h, include_vertices=include_vertices) for h in hands]
    return doc


def write_json(path: str | os.PathLike, hands: Sequence[Hand], **kwargs) -> Path:
    """Write `results_dict(hands, **kwargs)` to `path`."""
    with _open(path, "w") as f:
        json.dump(results_dict(hands, **kwargs), f)
    return Path(path)


# ---------------------------------------------------------------------------------------------- NPZ
def hands_to_arrays(hands: Sequence[Hand], faces: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Hands stacked along a first axis N: is_right (N,) bool, confidence (N,), box (N, 4), keypoints_2d
    (N, 21, 2), keypoints_3d (N, 21, 3), cam_t (N, 3), focal_length (N,), global_orient (N, 3), hand_pose
    (N, 15, 3), betas (N, 10), crop_cam (N, 3), track_id (N,) int (-1 = none); vertices (N, 778, 3) when
    every hand has them; faces (F, 3) right-hand faces when given."""
    n = len(hands)
    out = {
        "is_right": np.array([h.is_right for h in hands], bool),
        "confidence": np.array([h.confidence for h in hands], np.float32),
        "focal_length": np.array([h.focal_length for h in hands], np.float64),
        "track_id": np.array([-1 if h.track_id is None else h.track_id for h in hands], np.int64),
    }
    shapes = {"box": (4,), "keypoints_2d": (21, 2), "keypoints_3d": (21, 3), "cam_t": (3,), "global_orient": (3,),
              "hand_pose": (15, 3), "betas": (10,), "crop_cam": (3,)}
    for name, shape in shapes.items():
        arrays = [np.asarray(getattr(h, name), np.float32) for h in hands]
        out[name] = np.stack(arrays) if n else np.zeros((0, *shape), np.float32)
    for name in _OPTIONAL_ARRAYS:
        values = [getattr(h, name, None) for h in hands]
        if n and all(v is not None for v in values):
            out[name] = np.stack([np.asarray(v, np.float32) for v in values])
    if faces is not None:
        out["faces"] = np.asarray(faces, np.int32)
    return out


def write_npz(path: str | os.PathLike, hands: Sequence[Hand], faces: np.ndarray | None = None) -> Path:
    """Write `hands_to_arrays(hands, faces)` as a compressed .npz."""
    with _open(path, "wb") as f:
        np.savez_compressed(f, **hands_to_arrays(hands, faces))
    return Path(path)


# ---------------------------------------------------------------------------------------------- meshes
def mesh_arrays(hand: Hand, faces: np.ndarray, *, camera_space: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float32 metres, faces (F, 3) int32 wound for this hand's side). Camera space adds cam_t."""
    if hand.vertices is None:
        raise ValueError("this hand has no mesh vertices (was the pipeline run with include_vertices=False?)")
    v = np.asarray(hand.vertices, np.float64)
    if camera_space:
        v = v + np.asarray(hand.cam_t, np.float64)
    f = np.asarray(faces(True) if callable(faces) else faces, np.int32)
    if f.ndim != 2 or f.shape[1] != 3 or (len(f) and (f.min() < 0 or f.max() >= len(v))):
        raise ValueError(f"faces must be (F, 3) vertex indices below {len(v)}, got shape {f.shape}")
    return v.astype(np.float32), oriented_faces(f, hand.is_right)


def write_obj(path: str | os.PathLike, hand: Hand, faces: np.ndarray, *, camera_space: bool = True) -> Path:
    """Wavefront OBJ of one hand's mesh (vertices in metres)."""
    v, f = mesh_arrays(hand, faces, camera_space=camera_space)
    frame = "camera frame (x right, y down, z forward)" if camera_space else "hand frame (relative to cam_t)"
    lines = [f"# mlx-hands {hand.side} hand, metres, {frame}", f"o {hand.side}_hand"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v.tolist()]
    lines += [f"f {a} {b} {c}" for a, b, c in (f + 1).tolist()]
    with _open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return Path(path)


def write_ply(path: str | os.PathLike, hand: Hand, faces: np.ndarray, *, camera_space: bool = True, binary: bool = True) -> Path:
    """PLY of one hand's mesh: float32 vertices in metres, int32 triangle lists (binary little-endian or ASCII)."""
    v, f = mesh_arrays(hand, faces, camera_space=camera_space)
    header = "\n".join([
        "ply",
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        f"comment mlx-hands {hand.side} hand, metres",
        f"element vertex {len(v)}",
        "property float x", "property float y", "property float z",
        f"element face {len(f)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]) + "\n"
    with _open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        if binary:
            fh.write(v.astype("<f4").tobytes())
            rec = np.zeros(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
            rec["n"], rec["i"] = 3, f
            fh.write(rec.tobytes())
        else:
            body = [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in v.tolist()]
            body += [f"3 {a} {b} {c}" for a, b, c in f.tolist()]
            fh.write(("\n".join(body) + "\n").encode("ascii"))
    return Path(path)


# ---------------------------------------------------------------------------------------------- GLB
def _glb_chunks(doc: dict, binary: bytes) -> bytes:
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return (struct.pack("<III", 0x46546C67, 2, total) + struct.pack("<II", len(js), 0x4E4F534A) + js
            + struct.pack("<II", len(binary), 0x004E4942) + binary)


def write_glb(
    path: str | os.PathLike,
    frames: Iterable[Sequence[Hand]],
    faces: np.ndarray,
    *,
    times: Sequence[float] | None = None,
    fps: float = 30.0,
) -> Path:
    """One glTF 2.0 binary scene for an image or a whole clip.

    `frames` is a list of per-frame hand lists (one list for a single image). Each (frame, hand) becomes a
    node holding that hand's mesh in camera space; for more than one frame an animation shows each node only
    during its frame (step scale 1 / 0), at `times` (seconds) or index / fps. Right hands are orange, left
    hands blue. Coordinates are glTF's (x, −y, −z of the camera frame), metres.
    """
    frames = [list(f) for f in frames]
    faces = faces(True) if callable(faces) else faces
    if times is None:
        times = [i / fps for i in range(len(frames))]
    if len(times) != len(frames):
        raise ValueError(f"times has {len(times)} entries for {len(frames)} frames")
    if np.any(np.diff(np.asarray(times, np.float64)) <= 0):
        raise ValueError("times must be strictly increasing")
    f_right = np.asarray(faces, np.uint32)
    blob = bytearray()
    views, accessors = [], []

    def add(data: np.ndarray, target: int | None, acc: dict) -> int:
        blob.extend(b"\0" * (-len(blob) % 4))
        view = {"buffer": 0, "byteOffset": len(blob), "byteLength": data.nbytes}
        if target is not None:
            view["target"] = target
        blob.extend(data.tobytes())
        views.append(view)
        accessors.append({"bufferView": len(views) - 1, **acc})
        return len(accessors) - 1

    index = {}
    for right in (True, False):
        f = oriented_faces(f_right, right)
        index[right] = add(np.ascontiguousarray(f).reshape(-1), 34963,
                           {"componentType": 5125, "count": int(f.size), "type": "SCALAR"})
    materials = [
        {"name": "right", "pbrMetallicRoughness": {"baseColorFactor": [1.0, 0.59, 0.35, 1.0], "metallicFactor": 0.0}},
        {"name": "left", "pbrMetallicRoughness": {"baseColorFactor": [0.35, 0.67, 1.0, 1.0], "metallicFactor": 0.0}},
    ]
    meshes, nodes, channels, samplers = [], [], [], []
    animate = len(frames) > 1
    for k, hands in enumerate(frames):
        for j, hand in enumerate(hands):
            v, _ = mesh_arrays(hand, faces)
            v = (v * np.array([1, -1, -1], np.float32)).astype("<f4")
            pos = add(v, 34962, {"componentType": 5126, "count": len(v), "type": "VEC3",
                                 "min": v.min(0).tolist(), "max": v.max(0).tolist()})
            meshes.append({"primitives": [{"attributes": {"POSITION": pos}, "indices": index[hand.is_right],
                                           "material": 0 if hand.is_right else 1}]})
            tid = "" if hand.track_id is None else f"_track{hand.track_id}"
            node = {"name": f"frame{k:05d}_hand{j}_{hand.side}{tid}", "mesh": len(meshes) - 1}
            if animate:  # visible from its frame's time until the next frame's
                key_t, key_s = [float(times[k])], [1.0]
                if k > 0:
                    key_t, key_s = [float(times[0])] + key_t, [0.0] + key_s
                if k + 1 < len(frames):
                    key_t, key_s = key_t + [float(times[k + 1])], key_s + [0.0]
                node["scale"] = [1.0, 1.0, 1.0] if k == 0 else [0.0, 0.0, 0.0]
                inp = add(np.array(key_t, "<f4"), None, {"componentType": 5126, "count": len(key_t), "type": "SCALAR",
                                                          "min": [min(key_t)], "max": [max(key_t)]})
                out = add(np.repeat(np.array(key_s, "<f4")[:, None], 3, 1), None,
                          {"componentType": 5126, "count": len(key_s), "type": "VEC3"})
                samplers.append({"input": inp, "output": out, "interpolation": "STEP"})
                channels.append({"sampler": len(samplers) - 1, "target": {"node": len(nodes), "path": "scale"}})
            nodes.append(node)
    doc = {
        "asset": {"version": "2.0", "generator": "mlx-hands"},
        "scene": 0,
        "scenes": [{"nodes": list(range(len(nodes)))}],
        "nodes": nodes,
        "meshes": meshes,
        "materials": materials,
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(blob) + (-len(blob) % 4)}],
    }
    if channels:
        doc["animations"] = [{"name": "hands", "channels": channels, "samplers": samplers}]
    with _open(path, "wb") as fh:
        fh.write(_glb_chunks(doc, bytes(blob)))
    return Path(path)


# ---------------------------------------------------------------------------------------------- all at once
FORMATS = ("json", "npz", "obj", "ply", "glb")


def export_hands(
    out_dir: str | os.PathLike,
    stem: str,
    hands: Sequence[Hand],
    faces: np.ndarray | None,
    *,
    formats: Iterable[str] = ("json",),
    image_size: tuple[int, int] | None = None,
    source: str | os.PathLike | None = None,
    include_vertices: bool = True,
) -> list[Path]:
    """Write one image's results: `<stem>.json`, `<stem>.npz`, `<stem>.glb` (all hands) and per-hand meshes
    `<stem>_<i>_<side>.obj` / `.ply`. Returns the paths written. Mesh formats need `faces` and vertices."""
    formats = list(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    meshes = [f for f in formats if f in ("obj", "ply", "glb")]
    if meshes and faces is None:
        raise ValueError(f"{'/'.join(meshes)} export needs the MANO faces")
    faces = faces(True) if callable(faces) else faces
    out = ensure_dir(out_dir)
    written = []
    if "json" in formats:
        written.append(write_json(out / f"{stem}.json", hands, image_size=image_size, source=source,
                                  include_vertices=include_vertices))
    if "npz" in formats:
        written.append(write_npz(out / f"{stem}.npz", hands, faces))
    with_mesh = [h for h in hands if h.vertices is not None]
    for i, hand in enumerate(hands):
        if hand.vertices is None:
            continue
        if "obj" in formats:
            written.append(write_obj(out / f"{stem}_{i}_{hand.side}.obj", hand, faces))
        if "ply" in formats:
            written.append(write_ply(out / f"{stem}_{i}_{hand.side}.ply", hand, faces))
    if "glb" in formats:
        written.append(write_glb(out / f"{stem}.glb", [with_mesh], faces))
    return written
