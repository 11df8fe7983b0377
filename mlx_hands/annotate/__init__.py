"""Dataset annotation: images and videos -> Parquet tables of hands, resumable, locally or on Ray Data.

    from mlx_hands.annotate import annotate, read_hands, Settings
    summary = annotate(["photos/", "clips/"], "ann/", settings=Settings(conf=0.3), batch_size=16)
    table = read_hands("ann/")                      # pyarrow.Table, one row per hand

Modules (each imports only those before it): inputs (items, manifests, parts), schema (the two tables),
store (the folder, atomic commits, recovery), worker (one part: decode, model, commit), ray_engine (the Ray
Data actor; imports neither Ray nor MLX when loaded), engine (annotate(), the local engine).
This package module stays light: a Ray actor process imports it before it may load MLX.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "annotate": ("mlx_hands.annotate.engine", "annotate"),
    "Summary": ("mlx_hands.annotate.engine", "Summary"),
    "Settings": ("mlx_hands.annotate.worker", "Settings"),
    "ModelSpec": ("mlx_hands.annotate.worker", "ModelSpec"),
    "read_hands": ("mlx_hands.annotate.store", "read_hands"),
    "read_items": ("mlx_hands.annotate.store", "read_items"),
    "to_numpy": ("mlx_hands.annotate.schema", "to_numpy"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mlx_hands.annotate' has no attribute {name!r}")
