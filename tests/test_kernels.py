"""The hand-written CUDA kernels (models/kernels.py) against their fallbacks. The kernel cases run only where
MLX runs on CUDA (the lent GPU machine); the rest checks the fallbacks and the switches everywhere."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_hands import synthetic
from mlx_hands.config import WiLoRConfig
from mlx_hands.models import kernels
from mlx_hands.models.geometry import rot6d_to_rotmat
from mlx_hands.models.mano import MANO
from mlx_hands.models.refinenet import _sample_max_ops, sample_points

cuda = pytest.mark.skipif(not kernels.cuda_kernels_available(), reason="needs MLX's CUDA backend")
DTYPES = [(mx.float32, 1e-6), (mx.float16, 2e-3), (mx.bfloat16, 1.6e-2)]


def _np(x):
    return np.array(x.astype(mx.float32))


@pytest.fixture
def all_kernels():
    """Every kernel on, whatever MLX_HANDS_NO_KERNELS says."""
    with kernels.disabled():
        yield


def test_disabled_names_and_active(monkeypatch):
    with pytest.raises(ValueError, match="unknown kernel"):
        with kernels.disabled("gleu"):
            pass
    every = kernels.NAMES if kernels.cuda_kernels_available() else ()
    with kernels.disabled("gelu"):
        assert "gelu" not in kernels.active()
        with kernels.disabled("all"):
            assert kernels.active() == ()
        assert "gelu" not in kernels.active()  # the outer block's state is back
    assert kernels.active() == every
    # the environment's switch, read when used (not at import)
    monkeypatch.setenv("MLX_HANDS_NO_KERNELS", "mano,gelu")
    assert "mano" not in kernels.active() and "gelu" not in kernels.active()
    with kernels.disabled():  # a block with every kernel on, whatever the environment says
        assert kernels.active() == every
    monkeypatch.setenv("MLX_HANDS_NO_KERNELS", "gleu")
    with pytest.raises(ValueError, match="MLX_HANDS_NO_KERNELS: unknown kernel"):
        kernels.active()


def test_sample_max_fallback_is_max_of_samples():
    mx.random.seed(0)
    feat = mx.random.normal((2, 5, 4, 3))
    u, v = mx.random.uniform(-2, 6, (2, 7)), mx.random.uniform(-2, 7, (2, 7))
    want = np.array(sample_points(feat, mx.stack([u, v], -1))).max(axis=1)
    np.testing.assert_array_equal(np.array(_sample_max_ops(feat, u, v)), want)


def test_gelu_fallback_is_mlx_gelu():
    x = mx.random.normal((3, 40))
    with kernels.disabled("all"):
        np.testing.assert_array_equal(np.array(kernels.gelu(x)), np.array(nn.gelu(x)))


@cuda
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", [(2, 7, 1280), (3, 5, 96), (4, 33)])
def test_add_layer_norm_kernel(dtype, tol, shape):
    mx.random.seed(1)
    n = shape[-1]
    x, y = (mx.random.normal(shape).astype(dtype) for _ in range(2))
    w, b = mx.random.normal((n,)).astype(dtype), mx.random.normal((n,)).astype(dtype)
    s0, o0 = kernels.add_layer_norm(x, y, w, b, 1e-6, fused=False)
    s1, o1 = kernels.add_layer_norm(x, y, w, b, 1e-6, fused=True)
    np.testing.assert_array_equal(_np(s1), _np(s0))
    np.testing.assert_allclose(_np(o1), _np(o0), atol=tol * 8, rtol=tol)


@cuda
def test_add_layer_norm_kernel_unaligned_input():
    # a row-contiguous view that starts 2 bytes into its buffer: the kernel must take its one-element path
    mx.random.seed(2)
    base = mx.random.normal((3 * 1280 + 1,)).astype(mx.float16)
    x = base[1:].reshape(3, 1280)
    y = mx.random.normal((3, 1280)).astype(mx.float16)
    w, b = mx.ones((1280,), mx.float16), mx.zeros((1280,), mx.float16)
    s0, o0 = kernels.add_layer_norm(x, y, w, b, 1e-6, fused=False)
    s1, o1 = kernels.add_layer_norm(x, y, w, b, 1e-6, fused=True)
    np.testing.assert_array_equal(_np(s1), _np(s0))
    np.testing.assert_allclose(_np(o1), _np(o0), atol=2e-2, rtol=2e-3)


@cuda
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", [(2, 210, 5120), (3, 7), (1, 13)])
def test_gelu_kernel(dtype, tol, shape):
    mx.random.seed(3)
    x = (mx.random.normal(shape) * 3).astype(dtype)
    got = _np(kernels.gelu(x))
    xf = np.array(x.astype(mx.float32)).astype(np.float64)
    want = xf * (1 + np.vectorize(math.erf)(xf / math.sqrt(2))) / 2
    np.testing.assert_allclose(got, want, atol=tol, rtol=tol)
    with kernels.disabled("gelu"):
        np.testing.assert_allclose(got, _np(kernels.gelu(x)), atol=4 * tol, rtol=4 * tol)


@cuda
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("bhwc", [(2, 16, 12, 640), (3, 64, 48, 160), (1, 5, 7, 33)])
def test_sample_max_kernel(dtype, tol, bhwc):
    B, H, W, C = bhwc
    mx.random.seed(4)
    feat = mx.random.normal(bhwc).astype(dtype)
    # points inside, on the border and outside the map (zero padding)
    u = mx.random.uniform(-3, W + 2, (B, 778))
    v = mx.random.uniform(-3, H + 2, (B, 778))
    want = _np(_sample_max_ops(feat.astype(mx.float32), u, v))
    got = _np(kernels.sample_max(feat, u, v, _sample_max_ops))
    np.testing.assert_allclose(got, want, atol=tol * 4, rtol=tol)


@cuda
def test_sample_max_kernel_all_points_outside_gives_zero_and_nan_propagates():
    feat = mx.ones((1, 4, 4, 8))
    u = mx.full((1, 5), -10.0)
    np.testing.assert_array_equal(np.array(kernels.sample_max(feat, u, u, _sample_max_ops)), np.zeros((1, 8)))
    feat = mx.where(mx.arange(8) == 3, mx.array(float("nan")), feat)
    u = mx.full((1, 5), 1.5)
    got = np.array(kernels.sample_max(feat, u, u, _sample_max_ops))
    assert np.isnan(got[0, 3]) and not np.isnan(np.delete(got[0], 3)).any()


@cuda
@pytest.mark.parametrize("batch", [1, 5])
def test_mano_kernel_matches_ops(all_kernels, batch):
    m = MANO(WiLoRConfig().mano)
    m.set_data(synthetic.random_mano(seed=3))
    mx.random.seed(6)
    rot = rot6d_to_rotmat(mx.random.normal((batch, 16, 6)))
    betas = mx.random.normal((batch, 10))
    fast = m.posed(betas, rot)
    with kernels.disabled("mano"):
        ref = m.posed(betas, rot)
    for a, b in ((fast.vertices, ref.vertices), (fast.joints, ref.joints)):
        assert a.shape == b.shape and a.dtype == mx.float32
        np.testing.assert_allclose(np.array(a), np.array(b), atol=2e-6, rtol=1e-5)


@cuda
def test_rotation_kernels_match_ops(all_kernels):
    from mlx_hands.models import geometry

    mx.random.seed(7)
    x = mx.random.normal((4, 16, 6))
    x = mx.concatenate([x, mx.zeros((4, 1, 6))], axis=1)  # a degenerate 6D vector (clamped norms)
    R = geometry.rot6d_to_rotmat(x)
    R_ops = geometry._rot6d_to_rotmat_ops(x)
    np.testing.assert_allclose(np.array(R), np.array(R_ops), atol=1e-6)
    # identity, 180-degree turns about each axis and a near-identity rotation exercise every quaternion branch
    special = mx.array(np.array([np.eye(3), np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1]),
                                 [[1, 0, 0], [0, np.cos(1e-4), -np.sin(1e-4)], [0, np.sin(1e-4), np.cos(1e-4)]]],
                                np.float32))
    for r in (R_ops[:, :16], special):
        aa = geometry.rotmat_to_axis_angle(r)
        np.testing.assert_allclose(np.array(aa), np.array(geometry._rotmat_to_axis_angle_ops(r)), atol=2e-6)
