"""The exact GELU, softmax/attention and SiLU for MLX's CPU backend, as multiply-add chains that mx.compile turns
into vectorised C++ loops.

The Linux mlx wheel is built for baseline x86-64: its CPU erf and exp (mlx/backend/cpu/simd/math.h) evaluate
every fused multiply-add through a libm call (std::fma), ~26 ns an element for erf, ~12 for exp, single-threaded.
In ViT-H at one crop that was 31 ms of GELU and 10 ms of softmax per block, over a third of the forward; the
detector's SiLU took ~1 s a frame. Here GELU takes 1.2 ms, the softmax's exponentials 2 ms, per block.

How the loops stay fast: MLX fuses at most 11 levels of a graph into one kernel, and GCC (at MLX's -O3, SSE2)
leaves a loop scalar when it holds a select or a min/max. So the polynomials are evaluated by Estrin's scheme
(shallow), and every clamp is a compiled step of its own, before the arithmetic.

Accuracy (float32 against float64 on dense grids): GELU abs error < 2.2e-7 max(|x|, 1) (MLX's own 1.6e-7; both
use approximations of erf, PyTorch's CPU erf is MLX's formula; here GELU(-100) is 8e-6, not 0); exp relative error 1.2e-7 on [-87, 88] (MLX's
3.7e-6). Half-precision inputs are computed in float32 and rounded once.

The formulas are plain MLX ops and run on every backend; the models use them on the CPU only (GPUs keep
mx.fast.scaled_dot_product_attention, MLX's own ops and models/kernels.py).
"""

from __future__ import annotations

import math

import mlx.core as mx

# erf(x) = x P(x^2) / Q(x^2) on [-4, 4], +-1 beyond in float32: Eigen's float32 rational approximation
# (Eigen/src/Core/arch/Default/GenericPacketMathFunctions.h, generic_fast_erf_float), also XLA's; highest power first.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)

# GELU(y) = y/2 + (y xs) P'(w) / Q'(w) with xs = y clipped to +-4 sqrt(2), w = xs^2: the erf above at y / sqrt(2),
# its 1/sqrt(2) and GELU's 1/2 folded into the coefficients (lowest power first).
_GELU_CLIP = 4 * math.sqrt(2)
_GELU_P = tuple(0.5 * c / 2**k / math.sqrt(2) for k, c in enumerate(_ERF_P[::-1]))
_GELU_Q = tuple(c / 2**k for k, c in enumerate(_ERF_Q[::-1]))

# e^x = 2^n e^r, n = round(x / ln 2), |r| <= ln(2) / 2, e^r = 1 + r + r^2 P(r) (Cephes expf.c; P highest first),
# ln(2) in two parts for an exact reduction. 2^n is put together in the exponent bits of a float32.
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4
_ROUND = 12582912.0  # 1.5 * 2^23: y + _ROUND rounds y to an integer held in the low mantissa bits
_EXP_LO, _EXP_HI = -87.0, 88.0  # e^x stays a normal, finite float32


def _clip(x: mx.array, lo: float, hi: float) -> mx.array:
    """Clip with selects (propagates NaN), in a compiled step of its own (see the module docstring)."""
    return mx.where(x < lo, lo, mx.where(x > hi, hi, x))


# ---------------------------------------------------------------- GELU


@mx.compile
def _gelu_clip(y: mx.array) -> mx.array:
    return _clip(y, -_GELU_CLIP, _GELU_CLIP)


@mx.compile
def _gelu_rational(y: mx.array, xs: mx.array) -> mx.array:
    w = xs * xs
    w2 = w * w
    w4 = w2 * w2
    a, b = _GELU_P, _GELU_Q
    p = (a[0] + a[1] * w) + w2 * (a[2] + a[3] * w) + w4 * ((a[4] + a[5] * w) + a[6] * w2)
    q = (b[0] + b[1] * w) + w2 * (b[2] + b[3] * w) + w4 * b[4]
    return 0.5 * y + (y * xs) * (p / q)


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, x Phi(x), as torch.nn.GELU()."""
    y = x.astype(mx.float32)
    return _gelu_rational(y, _gelu_clip(y)).astype(x.dtype)


# ---------------------------------------------------------------- exp and what uses it


@mx.compile
def _exp_clip(x: mx.array) -> mx.array:
    return _clip(x, _EXP_LO, _EXP_HI)


@mx.compile
def _exp_reduce(x: mx.array) -> tuple[mx.array, mx.array]:
    """x (clipped) -> (m, r): m a float whose low mantissa bits hold n = round(x / ln 2); r = x - n ln 2."""
    m = x * (1 / math.log(2)) + _ROUND
    n = m - _ROUND
    return m, (x - n * _LN2_HI) - n * _LN2_LO


@mx.compile
def _exp2_bits(m_bits: mx.array) -> mx.array:
    """The int32 bits of the float32 2^n, from the bits of m."""
    return mx.left_shift(m_bits - (0x4B400000 - 127), 23)


def _exp_parts(x: mx.array) -> tuple[mx.array, mx.array]:
    """x (float32, clipped) -> (2^n, r) with e^x = 2^n e^r."""
    m, r = _exp_reduce(x)
    return mx.view(_exp2_bits(mx.view(m, mx.int32)), mx.float32), r


def _exp_r(r: mx.array) -> mx.array:
    """e^r for |r| <= ln(2) / 2, Estrin's scheme."""
    p = _EXP_P
    r2 = r * r
    return 1 + r + r2 * (((p[5] + p[4] * r) + r2 * (p[3] + p[2] * r)) + (r2 * r2) * (p[1] + p[0] * r))


@mx.compile
def _exp_finish(pow2n: mx.array, r: mx.array) -> mx.array:
    return pow2n * _exp_r(r)


def exp(x: mx.array) -> mx.array:
    """e^x in float32, x clipped to [-87, 88] first (so 0 < result < inf; NaN stays NaN)."""
    return _exp_finish(*_exp_parts(_exp_clip(x.astype(mx.float32))))


@mx.compile
def _silu_finish(y: mx.array, pow2n: mx.array, r: mx.array) -> mx.array:
    return y / (1 + pow2n * _exp_r(r))


def silu(x: mx.array) -> mx.array:
    """x sigmoid(x) = x / (1 + e^-x)."""
    y = x.astype(mx.float32)
    return _silu_finish(y, *_exp_parts(_exp_clip(-y))).astype(x.dtype)


@mx.compile
def _shifted_logits(s: mx.array, row_max: mx.array, scale: mx.array) -> mx.array:
    return _clip((s - row_max) * scale, _EXP_LO, 0.0)


def _softmax_parts(s: mx.array, scale: float) -> tuple[mx.array, mx.array]:
    """e = exp(scale (s - max s)) over the last axis and its row sums, float32."""
    s = s.astype(mx.float32)
    x = _shifted_logits(s, s.max(axis=-1, keepdims=True), mx.array(scale, mx.float32))
    e = _exp_finish(*_exp_parts(x))
    return e, e.sum(axis=-1, keepdims=True)


def softmax(s: mx.array, scale: float = 1.0) -> mx.array:
    """softmax(scale * s) over the last axis, in float32 (scale > 0)."""
    e, total = _softmax_parts(s, scale)
    return e / total


def attention(q: mx.array, k: mx.array, v: mx.array, scale: float) -> mx.array:
    """softmax(scale q k^T) v for q, k, v (B, heads, N, D): what mx.fast.scaled_dot_product_attention computes,
    as two batched matrix products around the exponentials above; the rows are normalised after the product
    with v (N x D numbers instead of N x N)."""
    e, total = _softmax_parts(q @ k.swapaxes(-1, -2), scale)
    return (e.astype(v.dtype) @ v) / total.astype(v.dtype)


def use(setting: bool | None) -> bool:
    """A module's switch: None (the default) means on the CPU, where these formulas pay; True/False force it."""
    return mx.default_device().type == mx.DeviceType.cpu if setting is None else setting
