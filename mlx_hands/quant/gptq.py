"""GPTQ (Frantar et al., 2023) for mlx_hands.quant: 4/8-bit levels chosen with calibration data.

For each linear, the second moments H = E[x x^T] of its inputs are measured on calibration crops; the
weight's columns are then rounded left to right and each rounding error is compensated in the columns not
yet rounded, weighted by H^-1, which minimises the layer's output error on inputs like those. The output is
MLX's own affine format (packed levels, per-group scales and biases), so loading and the kernels are the
same as for round-to-nearest. The solver runs in numpy (float64 inverse, float32 updates), one layer at a
time; the moments are accumulated by MLX during a forward of the backbone.
"""

from __future__ import annotations

import logging
import time

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_unflatten

from ..models.wilor import normalize_crops

log = logging.getLogger(__name__)

GPTQ_BLOCK = 128  # columns per lazy update (a multiple of every group size)
GPTQ_DAMP = 0.01  # added to H's diagonal, relative to its mean (the usual GPTQ setting)
MIN_CALIBRATION = 8


def check_calibration(crops, model: nn.Module) -> np.ndarray:
    """Calibration crops -> float32 (N, S, S, 3) numpy, or one clear error."""
    size = model.config.image_size if hasattr(model, "config") else 256
    a = np.asarray(crops)
    if a.ndim != 4 or a.shape[1:] != (size, size, 3):
        raise ValueError(f"calibration crops must have shape (N, {size}, {size}, 3) (RGB, 0..255), got {a.shape}")
    if len(a) == 0:
        raise ValueError("calibration crops: the batch is empty (no hands found to calibrate on?)")
    if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"calibration crops must be uint8 or float (0..255), got {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 255:
        raise ValueError("calibration crops must hold finite values in 0..255")
    if len(a) < MIN_CALIBRATION:
        log.warning("only %d calibration crops; GPTQ is steadier with %d or more", len(a), MIN_CALIBRATION)
    return a


class _InputMoments(nn.Module):
    """Stands in for a linear while calibrating: accumulates sum(x x^T) of its inputs (float32)."""

    def __init__(self, linear: nn.Module):
        super().__init__()
        self.linear = linear
        self._sum, self._count = None, 0

    def __call__(self, x):
        x2 = x.reshape(-1, x.shape[-1]).astype(mx.float32)
        h = x2.T @ x2
        self._sum = h if self._sum is None else self._sum + h
        self._count += x2.shape[0]
        mx.eval(self._sum)
        return self.linear(x)

    def moments(self) -> mx.array:
        return self._sum / self._count


def input_moments(model: nn.Module, paths, crops: np.ndarray, batch: int = 8) -> dict[str, mx.array]:
    """E[x x^T] (float32, on the device) of the inputs of the backbone linears at `paths`, over every token of
    `crops`. For the full model they take ~4 GB together (a 5120 x 5120 matrix per fc2)."""
    modules = dict(model.named_modules())
    recorders = {p: _InputMoments(modules[p]) for p in paths}
    model.update_modules(tree_unflatten(list(recorders.items())))
    try:
        for i in range(0, len(crops), batch):
            x = normalize_crops(mx.array(crops[i : i + batch]), model.config.vit.image_size, model.dtype)
            mx.eval(model.backbone(x).features)  # the block linears see only the backbone's tokens
    finally:
        model.update_modules(tree_unflatten([(p, r.linear) for p, r in recorders.items()]))
    return {p: r.moments() for p, r in recorders.items()}


def _round_to(a: np.ndarray, dtype) -> np.ndarray:
    """float32 values as the model stores them (scales and biases live in the weights' dtype)."""
    return np.array(mx.array(a).astype(dtype).astype(mx.float32))


def gptq_quantize(w: np.ndarray, H: np.ndarray, bits: int, group_size: int, dtype=mx.float32):
    """One linear's weight (out, in) and its input moments H (in, in) -> MLX affine parts
    (levels uint8 (out, in), scales (out, in/g), biases (out, in/g)) with w ~ scales * levels + biases.

    GPTQ with lazy block updates: columns are rounded left to right; each column's error, scaled by the
    Cholesky factor of H^-1, is pushed onto the columns not yet rounded. A group's scale and bias
    (min/max over its columns) are taken when its first column is reached, from the updated weights.
    """
    W = np.array(w, np.float32, copy=True)
    out, n = W.shape
    H = np.array(H, np.float64, copy=True)
    dead = np.diag(H) <= 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H[np.diag_indices(n)] += GPTQ_DAMP * np.mean(np.diag(H))
    try:
        L = np.linalg.cholesky(np.linalg.inv(H))
    except np.linalg.LinAlgError as e:
        raise ValueError(f"GPTQ: the calibration inputs' moment matrix is singular ({e})") from None
    U = L.T.astype(np.float32)  # upper: H^-1 = U^T U
    maxq = 2**bits - 1
    levels = np.empty((out, n), np.uint8)
    scales = np.empty((out, n // group_size), np.float32)
    biases = np.empty_like(scales)
    for i1 in range(0, n, GPTQ_BLOCK):
        i2 = min(i1 + GPTQ_BLOCK, n)
        Wb = W[:, i1:i2].copy()
        Eb = np.zeros_like(Wb)
        Ub = U[i1:i2, i1:i2]
        for j in range(i2 - i1):
            c = i1 + j
            if c % group_size == 0:
                grp = Wb[:, j : j + group_size]
                lo, hi = grp.min(1), grp.max(1)
                scale = _round_to((hi - lo) / maxq, dtype)
                bias = _round_to(lo, dtype)
                safe = np.where(scale > 0, scale, 1.0)
                scales[:, c // group_size], biases[:, c // group_size] = scale, bias
            q = np.clip(np.rint((Wb[:, j] - bias) / safe), 0, maxq)
            levels[:, c] = q
            err = (Wb[:, j] - (q * scale + bias)) / Ub[j, j]
            Wb[:, j + 1 :] -= np.outer(err, Ub[j, j + 1 :])
            Eb[:, j] = err
        if i2 < n:
            W[:, i2:] -= Eb @ U[i1:i2, i2:]
    return levels, scales, biases


def pack_levels(levels: np.ndarray, bits: int) -> np.ndarray:
    """(out, in) integer levels -> MLX's packed uint32 (out, in * bits / 32), lowest bits first."""
    per = 32 // bits
    q = levels.astype(np.uint32).reshape(levels.shape[0], -1, per)
    shifts = (np.arange(per, dtype=np.uint32) * bits)
    return np.bitwise_or.reduce(q << shifts, axis=-1)


def gptq_parts(model: nn.Module, chosen: dict[str, dict], crops: np.ndarray) -> dict[str, dict[str, mx.array]]:
    """GPTQ parts (weight, scales, biases as MLX stores them) for every layer in `chosen` (path -> settings)."""
    t = time.perf_counter()
    moments = input_moments(model, list(chosen), crops)
    log.info("calibration: input moments of %d layers from %d crops in %.1f s", len(chosen), len(crops),
             time.perf_counter() - t)
    modules = dict(model.named_modules())
    out = {}
    for path in sorted(chosen):
        s, lin = chosen[path], modules[path]
        dtype = lin.weight.dtype
        H = np.array(moments.pop(path), dtype=np.float64)  # one layer at a time in float64
        levels, scales, biases = gptq_quantize(np.array(lin.weight.astype(mx.float32)), H, s["bits"],
                                               s["group_size"], dtype)
        out[path] = {"weight": mx.array(pack_levels(levels, s["bits"])),
                     "scales": mx.array(scales).astype(dtype), "biases": mx.array(biases).astype(dtype)}
        mx.eval(out[path])
    log.info("GPTQ: %d layers in %.1f s", len(out), time.perf_counter() - t)
    return out
