"""erf and exp as short chains of multiplies and adds, and the functions built on them (exact GELU, softmax,
attention, SiLU), for MLX's CPU backend.

The Linux mlx wheel is built for baseline x86-64, so its CPU erf and exp (mlx/backend/cpu/simd/math.h)
evaluate every fused multiply-add through a libm call (std::fma): ~26 ns an element for erf, ~12 for exp,
single-threaded. In ViT-H at one crop that was 31 ms of GELU and 10 ms of softmax per block, over a third
of the forward. The same polynomials written as MLX ops, fused by mx.compile into one C++ loop, take a
tenth of that; without a C++ compiler mx.compile runs the ops unfused, still 3x faster than MLX's erf.

Accuracy (float32, measured against float64 on a dense grid): erf max abs error 4.4e-7 (MLX's own 5.3e-7;
PyTorch's CPU erf is the same Abramowitz-Stegun formula as MLX's), exp relative error 2e-7 in the normal
range. Half-precision inputs are evaluated in float32 and rounded once.

The formulas are plain MLX ops and run on every backend; the models use them on the CPU only (GPUs keep
mx.fast.scaled_dot_product_attention, MLX's own ops and models/kernels.py).
"""

from __future__ import annotations

import functools
import math

import mlx.core as mx

# erf on [-4, 4] as x P(x^2) / Q(x^2); beyond, erf is +-1 in float32. The float32 rational approximation
# of Eigen (Eigen/src/Core/arch/Default/GenericPacketMathFunctions.h, generic_fast_erf_float), also XLA's.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)

# e^r = 1 + r + r^2 P(r) on |r| <= ln(2) / 2, and ln(2) in two parts for the reduction (Cephes expf.c)
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4
_ROUND = 12582912.0  # 1.5 * 2^23: y + _ROUND rounds y to an integer held in the low mantissa bits


def _horner(x: mx.array, coeffs: tuple[float, ...]) -> mx.array:
    p = coeffs[0] * x + coeffs[1]
    for c in coeffs[2:]:
        p = p * x + c
    return p


def erf(x: mx.array) -> mx.array:
    """erf in float32 (x any float dtype); max abs error 4.4e-7."""
    x = mx.clip(x.astype(mx.float32), -4.0, 4.0)
    x2 = x * x
    return x * _horner(x2, _ERF_P) / _horner(x2, _ERF_Q)


def exp(x: mx.array) -> mx.array:
    """e^x in float32 for x in [-87, 88] (clamped there: 0 < result < inf), as 2^n e^r with n = round(x / ln 2);
    2^n is put together in the exponent bits."""
    x = mx.clip(x.astype(mx.float32), -87.0, 88.0)
    m = x * (1 / math.log(2)) + _ROUND
    n = m - _ROUND  # round(x / ln 2), exactly
    r = x - n * _LN2_HI - n * _LN2_LO
    e_r = 1 + r + r * r * _horner(r, _EXP_P)
    return mx.view(mx.left_shift(mx.view(m, mx.int32) - (0x4B400000 - 127), 23), mx.float32) * e_r


@mx.compile  # not shapeless: MLX 0.32's shapeless CPU kernels ran 3x slower once called with a second shape
def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, x * Phi(x), as torch.nn.GELU(). Abs error < 2.2e-7 max(|x|, 1) (MLX: 1.6e-7)."""
    y = x.astype(mx.float32)
    return (y * (1 + erf(y * (1 / math.sqrt(2)))) * 0.5).astype(x.dtype)


@mx.compile
def silu(x: mx.array) -> mx.array:
    """x * sigmoid(x)."""
    y = x.astype(mx.float32)
    return (y / (1 + exp(-y))).astype(x.dtype)


@mx.compile
def _softmax_parts(s: mx.array, scale: mx.array) -> tuple[mx.array, mx.array]:
    """e = exp(scale (s - max s)) and its row sums, over the last axis, float32."""
    s = s.astype(mx.float32)
    e = exp((s - s.max(axis=-1, keepdims=True)) * scale)
    return e, e.sum(axis=-1, keepdims=True)


def softmax(s: mx.array, scale: float = 1.0) -> mx.array:
    """softmax(scale * s) over the last axis, in float32 (scale > 0)."""
    e, total = _softmax_parts(s, mx.array(scale, mx.float32))
    return e / total


# CPU streams that elementwise work is split over: MLX runs each CPU stream on a thread of its own, and its
# elementwise kernels are single-threaded, so two streams keep both cores of a small machine busy. The matrix
# products stay on the default stream (BLAS threads them itself). 1 turns the split off (for A/B runs).
STREAMS = 2


@functools.cache
def _side_stream() -> mx.Stream:
    return mx.new_stream(mx.cpu)


def _split_apply(fn, x: mx.array, axis: int) -> list:
    """[fn(part) for the parts of x along axis]: one part, or two with the second on a second CPU stream."""
    if STREAMS < 2 or x.shape[axis] < 2:
        return [fn(x)]
    lo, hi = mx.split(x, [x.shape[axis] // 2], axis=axis)
    first = fn(lo)
    with mx.stream(_side_stream()):
        second = fn(hi)
    return [first, second]


def gelu_rows(x: mx.array) -> mx.array:
    """gelu with the rows (axis -2) split over the CPU streams."""
    if x.ndim < 2:
        return gelu(x)
    parts = _split_apply(gelu, x, axis=-2)
    return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=-2)


def attention(q: mx.array, k: mx.array, v: mx.array, scale: float) -> mx.array:
    """softmax(scale q k^T) v for q, k, v (B, heads, N, D): what mx.fast.scaled_dot_product_attention computes,
    as two batched matrix products around the exponentials above, the heads split over the CPU streams; the
    rows are normalised after the product with v (N x D numbers instead of N x N)."""
    scale = mx.array(scale, mx.float32)
    parts = _split_apply(lambda t: _softmax_parts(t, scale), q @ k.swapaxes(-1, -2), axis=1)
    vs = mx.split(v, [parts[0][0].shape[1]], axis=1)[: len(parts)]
    out = [(e.astype(v.dtype) @ vh) / total.astype(v.dtype) for (e, total), vh in zip(parts, vs)]
    return out[0] if len(out) == 1 else mx.concatenate(out, axis=1)


def use(setting: bool | None) -> bool:
    """A module's switch: None (the default) means on the CPU, where these formulas pay; True/False force it."""
    return mx.default_device().type == mx.DeviceType.cpu if setting is None else setting
