"""to_device: the same values as mx.array in every mode (on the CPU and Metal every mode is mx.array; the
CUDA paths are checked by benchmarks/transfer.py on a GPU)."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_hands import synthetic, transfer


@pytest.mark.parametrize("mode", transfer.MODES)
@pytest.mark.parametrize("a", [
    np.random.default_rng(0).integers(0, 256, (5, 64, 96, 3), dtype=np.uint8),
    np.random.default_rng(1).normal(size=(3, 256, 256, 3)).astype(np.float32),
    np.arange(10, dtype=np.float32),
    np.random.default_rng(2).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)[:, :, ::-1],  # negative strides
    np.random.default_rng(3).integers(0, 256, (70, 256, 256, 3), dtype=np.uint8)[:, :, 32:-32],  # a crop window
])
def test_same_values_as_mx_array(mode, a):
    x = transfer.to_device(a, mode=mode)
    assert x.dtype == mx.array(np.ascontiguousarray(a)).dtype and x.shape == a.shape
    np.testing.assert_array_equal(np.array(x), a)


def test_from_device_is_np_array_of_each():
    arrays = {"a": mx.arange(12).reshape(3, 4).astype(mx.float32), "b": mx.ones((2, 1, 3), mx.bfloat16) / 3,
              "i": mx.arange(5), "c": mx.array([[1.5, 2.5]], mx.float16)}
    out = transfer.from_device(arrays)
    assert list(out) == list(arrays)
    for k, v in arrays.items():
        ref = np.array(v.astype(mx.float32)) if mx.issubdtype(v.dtype, mx.floating) else np.array(v)
        assert out[k].dtype == ref.dtype and out[k].shape == ref.shape
        np.testing.assert_array_equal(out[k], ref)
    assert transfer.from_device({}) == {}
    assert transfer.from_device(arrays, mode="plain")["c"].dtype == np.float32
    np.testing.assert_array_equal(transfer.from_device({"x": mx.zeros((2, 2), mx.float16)})["x"], np.zeros((2, 2)))


cuda = pytest.mark.skipif(not (mx.default_device().type == mx.DeviceType.gpu and mx.cuda.is_available()),
                          reason="the pinned-buffer paths run on MLX's CUDA backend only")


@cuda
def test_staged_paths_are_exact_and_grow():
    rng = np.random.default_rng(5)
    # (70, ...) grows the buffer; (7, 111, 113, 3) is not a multiple of the copy's block
    for shape in [(1, 256, 192, 3), (70, 256, 256, 3), (3, 256, 256, 3), (7, 111, 113, 3)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        x = transfer.to_device(a[:, :, 32:-32] if shape[2] == 256 else a)
        np.testing.assert_array_equal(np.array(x), a[:, :, 32:-32] if shape[2] == 256 else a)
    assert transfer._staging is not None
    f = rng.normal(size=(5, 3331)).astype(np.float32)  # float32, not a multiple of the copy's block
    np.testing.assert_array_equal(np.array(transfer.to_device(f)), f)
    for n in [1, 3, 4, 4097, 3_000_001]:  # not multiples of 4, and one that grows the output buffer
        v = mx.array(rng.normal(size=n).astype(np.float32))
        h = mx.array(rng.normal(size=(n, 2)).astype(np.float32)).astype(mx.bfloat16)
        out = transfer.from_device({"v": v, "h": h, "i": mx.arange(3)})
        np.testing.assert_array_equal(out["v"], np.array(v))
        np.testing.assert_array_equal(out["h"], np.array(h.astype(mx.float32)))
        np.testing.assert_array_equal(out["i"], np.arange(3))
    # a single float32 output that is an unaligned view of its buffer takes the kernel's one-float path
    base = mx.array(rng.normal(size=1001).astype(np.float32))
    np.testing.assert_array_equal(transfer.from_device({"x": base[1:]})["x"], np.array(base)[1:])


def test_mode_switches_are_explicit(monkeypatch):
    monkeypatch.delenv("MLX_HANDS_TRANSFER", raising=False)
    assert transfer.current_mode() == "staged"
    with transfer.using("plain"):
        assert transfer.current_mode() == "plain"
        with transfer.using("prefetch"):
            assert transfer.current_mode() == "prefetch"
        assert transfer.current_mode() == "plain"
        assert transfer.current_mode("staged") == "staged"  # an argument wins over the block
    assert transfer.current_mode() == "staged"
    monkeypatch.setenv("MLX_HANDS_TRANSFER", "plain")  # read when used, not at import
    assert transfer.current_mode() == "plain"
    monkeypatch.setenv("MLX_HANDS_TRANSFER", "fast")
    with pytest.raises(ValueError, match="MLX_HANDS_TRANSFER must be one of"):
        transfer.to_device(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="transfer mode must be one of"):
        with transfer.using("fast"):
            pass


def test_model_outputs_to_numpy_in_one_copy():
    model = synthetic.random_model(synthetic.TINY, "bfloat16")
    out = model(synthetic.make_crops(2, 1))
    host = out.to_numpy()
    assert set(host) == {"keypoints_3d", "vertices", "cam", "global_orient", "hand_pose", "betas",
                         "global_orient_rotmat", "hand_pose_rotmat"}
    for name, value in host.items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, np.array(getattr(out, name).astype(mx.float32)))
