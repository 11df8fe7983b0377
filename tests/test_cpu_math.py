"""models/cpu_math.py: erf, exp and what is built on them, against float64 references and MLX's own ops; the
modules' switches give the same outputs either way."""

import math

import mlx.core as mx
import numpy as np
import pytest

from mlx_hands import bench
from mlx_hands.config import DetectorConfig
from mlx_hands.models import cpu_math
from mlx_hands.models.vit import Block
from mlx_hands.models.yolo import YOLOPose

X = np.linspace(-7, 7, 20001).astype(np.float32)


def _f64(fn, x):
    return np.array([fn(float(v)) for v in x])


def test_gelu_matches_float64():
    x = np.concatenate([X, np.linspace(-100, 100, 2001, dtype=np.float32)])
    gelu = x * (1 + _f64(lambda v: math.erf(v / math.sqrt(2)), x)) / 2
    err = np.abs(np.array(cpu_math.gelu(mx.array(x))) - gelu)
    assert (err / np.maximum(np.abs(x), 1)).max() < 4e-7  # 1 + erf cancels for x << 0, as in MLX and PyTorch


def test_exp_matches_float64_and_clamps():
    x = np.linspace(-87, 88, 20001).astype(np.float32)
    want = np.exp(x.astype(np.float64))
    assert (np.abs(np.array(cpu_math.exp(mx.array(x))) - want) / want).max() < 2.5e-7
    out = np.array(cpu_math.exp(mx.array([-1000.0, 1000.0, np.nan, -np.inf])))
    assert 0 < out[0] < 1e-37 and np.isfinite(out[1]) and np.isnan(out[2]) and 0 < out[3] < 1e-37
    assert np.isnan(np.array(cpu_math.gelu(mx.array([np.nan])))).all()


def test_silu_softmax_attention_match_mlx():
    x = mx.array(X)
    np.testing.assert_allclose(np.array(cpu_math.silu(x)), X / (1 + np.exp(-X.astype(np.float64))), rtol=1e-6,
                               atol=1e-7)
    mx.random.seed(0)
    s = mx.random.normal((2, 3, 17, 17)) * 5
    np.testing.assert_allclose(np.array(cpu_math.softmax(s, 0.3)), np.array(mx.softmax(s * 0.3, axis=-1, precise=True)),
                               atol=2e-7)
    q, k, v = (mx.random.normal((2, 4, 11, 8)) for _ in range(3))
    np.testing.assert_allclose(np.array(cpu_math.attention(q, k, v, 0.35)),
                               np.array(mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35)), atol=1e-6)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    x = mx.array(X).astype(dtype)
    for fn in (cpu_math.gelu, cpu_math.silu):
        got = fn(x)
        assert got.dtype == dtype
        want = fn(x.astype(mx.float32)).astype(dtype)  # rounded once
        np.testing.assert_array_equal(np.array(got.astype(mx.float32)), np.array(want.astype(mx.float32)))


def _set(module, value):
    for _, m in module.named_modules():
        if hasattr(m, "cpu_math"):
            m.cpu_math = value


def test_vit_block_and_detector_switches_agree():
    mx.random.seed(1)
    blk = Block(64, 4, 4.0, 1e-6)
    x = mx.random.normal((2, 21, 64))
    outs = []
    for v in (False, True):
        _set(blk, v)
        outs.append(np.array(blk(x)))
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5)  # also on a GPU (other GEMM orders)

    det = YOLOPose(DetectorConfig(width=0.0625, depth=0.34, max_channels=64))
    img = mx.array(bench.make_crops(1, size=64))
    outs = []
    for v in (False, True):
        _set(det, v)
        outs.append(np.array(det(img)))
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-4)
