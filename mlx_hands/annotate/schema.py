"""The two Parquet tables of an annotation folder and their conversion from Hand records.

hands (one row per hand): every array is a flat fixed-size list of float32, row-major, with its shape in
the field metadata ({"shape": "21,2"}): pandas gives each cell as a 1-D numpy array (np.stack(col) then
reshape), polars an Array, DuckDB a FLOAT[] list. Units as in mlx_hands.export.UNITS.

items (one row per input item): status 'done' or 'failed', the counts, the error (one line), the seconds it
took, and the model identity and settings of the run (JSON strings, the same as DIR/run.json).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from ..export import UNITS
from ..types import Hand

# name -> shape of one hand's array (flattened in the file)
ARRAYS = {
    "box": (4,),
    "keypoints_2d": (21, 2),
    "keypoints_3d": (21, 3),
    "cam_t": (3,),
    "global_orient": (3,),
    "hand_pose": (15, 3),
    "betas": (10,),
}
VERTICES = (778, 3)


def _array_field(name: str, shape: tuple[int, ...]) -> pa.Field:
    size = int(np.prod(shape))
    meta = {"shape": ",".join(map(str, shape)), "units": UNITS.get(name, "")}
    return pa.field(name, pa.list_(pa.float32(), size), nullable=False, metadata=meta)


def hands_schema(vertices: bool = False) -> pa.Schema:
    fields = [
        pa.field("source", pa.string(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("time", pa.float64(), metadata={"units": "seconds from the start of the video; null for images"}),
        pa.field("hand", pa.int32(), nullable=False, metadata={"units": "index within the frame, best first"}),
        pa.field("track_id", pa.int32(), metadata={"units": UNITS["track_id"]}),
        pa.field("side", pa.string(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
    ]
    for name, shape in ARRAYS.items():
        if name == "global_orient":  # the column order: ..., cam_t, focal_length, global_orient, ...
            meta = {"units": UNITS["focal_length"]}
            fields.append(pa.field("focal_length", pa.float32(), nullable=False, metadata=meta))
        fields.append(_array_field(name, shape))
    if vertices:
        fields.append(_array_field("vertices", VERTICES))
    return pa.schema(fields)


ITEMS_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("frames", pa.int32(), nullable=False),
    pa.field("hands", pa.int32(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("seconds", pa.float64(), nullable=False),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("fps", pa.float64()),
    pa.field("video_frames", pa.int32()),
    pa.field("part", pa.string(), nullable=False),
    pa.field("worker", pa.string()),
    pa.field("model", pa.string(), nullable=False),
    pa.field("settings", pa.string(), nullable=False),
])


def hands_table(rows: Sequence[tuple[str, int, float | None, int, int | None, Hand]], vertices: bool) -> pa.Table:
    """(source, frame, time, hand index, track id, Hand) rows -> a hands table (vertices: include them)."""
    hands = [r[5] for r in rows]
    n = len(rows)
    cols = {
        "source": pa.array([r[0] for r in rows], pa.string()),
        "frame": pa.array([r[1] for r in rows], pa.int32()),
        "time": pa.array([r[2] for r in rows], pa.float64()),
        "hand": pa.array([r[3] for r in rows], pa.int32()),
        "track_id": pa.array([r[4] for r in rows], pa.int32()),
        "side": pa.array([h.side for h in hands], pa.string()),
        "confidence": pa.array(np.array([h.confidence for h in hands], np.float32)),
        "focal_length": pa.array(np.array([h.focal_length for h in hands], np.float32)),
    }
    shapes = dict(ARRAYS, vertices=VERTICES) if vertices else ARRAYS
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        flat = np.zeros((n, size), np.float32)
        for i, h in enumerate(hands):
            flat[i] = np.asarray(getattr(h, name), np.float32).reshape(size)
        cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), size)
    schema = hands_schema(vertices)
    return pa.table([cols[f.name] for f in schema], schema=schema)


def items_table(rows: Sequence[dict]) -> pa.Table:
    """Status dicts (keys of ITEMS_SCHEMA; missing ones null) -> an items table."""
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in ITEMS_SCHEMA} for r in rows], schema=ITEMS_SCHEMA)


def to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """A hands table -> numpy arrays with their shapes: keypoints_2d (N, 21, 2), box (N, 4), ...; track_id as
    float with NaN for images; strings as object arrays."""
    out = {}
    for field in table.schema:
        col = table.column(field.name).combine_chunks()
        meta = field.metadata or {}
        if b"shape" in meta:
            shape = tuple(int(s) for s in meta[b"shape"].decode().split(","))
            out[field.name] = col.flatten().to_numpy(zero_copy_only=False).reshape((len(col),) + shape)
        elif pa.types.is_integer(field.type) and col.null_count:
            out[field.name] = col.to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            out[field.name] = col.to_numpy(zero_copy_only=False)
    return out


def dumps(d: dict) -> str:
    """Canonical JSON for the identity columns (sorted keys, so equal dicts give equal strings)."""
    return json.dumps(d, sort_keys=True, separators=(",", ":"))
