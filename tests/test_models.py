"""The MLX networks on tiny configs, the MANO layer and the rotation conversions."""

import copy
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_hands import synthetic
from mlx_hands.config import RefineNetConfig, ViTConfig, WiLoRConfig
from mlx_hands.convert.wilor import convert_wilor_state
from mlx_hands.models.geometry import axis_angle_to_rotmat, rot6d_to_rotmat, rotmat_to_axis_angle
from mlx_hands.models.mano import MANO
from mlx_hands.models.refinenet import sample_points
from mlx_hands.models.wilor import WiLoR
from mlx_hands.weights import load_weights_strict, parameter_shapes
from synth import make_mano

GOLDEN = Path(__file__).parent / "fixtures" / "wilor_tiny_golden.npz"
TINY = WiLoRConfig(vit=ViTConfig(dim=64, depth=2, num_heads=4), refine_net=RefineNetConfig(feat_dim=64))


@pytest.fixture(scope="module")
def mano_arrays():
    return make_mano(seed=0)


@pytest.fixture(scope="module")
def golden():
    g = np.load(GOLDEN)
    return {
        "config": WiLoRConfig.from_dict(json.loads(str(g["config"]))),
        "state": {k[6:]: g[k] for k in g.files if k.startswith("state/")},
        "mano": {k[5:]: g[k] for k in g.files if k.startswith("mano/")},
        "mean": {k[5:]: g[k] for k in g.files if k.startswith("mean/")},
        "out": {k[4:]: g[k] for k in g.files if k.startswith("out/")},
        "out_focal": {k[10:]: g[k] for k in g.files if k.startswith("out_focal/")},
        "other_focal": float(g["other_focal"]),
        "crops": g["crops"],
    }


def load_golden_model(golden) -> WiLoR:
    model = WiLoR(golden["config"])
    arrays = convert_wilor_state(golden["state"], parameter_shapes(model), golden["mean"])
    load_weights_strict(model, {k: mx.array(v) for k, v in arrays.items()}, "golden")
    model.mano.set_data(golden["mano"])
    return model


# ---------------------------------------------------------------- parity with the reference


def test_wilor_matches_reference_fp32(golden):
    """Golden tensors from WiLoR-mini's own model code (scripts/make_golden.py), seeded random weights."""
    out = load_golden_model(golden)(mx.array(golden["crops"])).to_dict()
    ref = golden["out"]
    np.testing.assert_allclose(np.array(out["pred_vertices"]), ref["pred_vertices"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.array(out["pred_keypoints_3d"]), ref["pred_keypoints_3d"], rtol=0, atol=1e-5)
    for k in ("pred_cam", "betas", "global_orient", "hand_pose"):
        np.testing.assert_allclose(np.array(out[k]), ref[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_wilor_focal_length_matches_reference(golden):
    """A non-default crop focal length F reaches RefineNet's projection, as in WiLoR-mini."""
    model = load_golden_model(golden)
    F = golden["other_focal"]
    for focal in (F, mx.full((len(golden["crops"]),), F)):
        out = model(mx.array(golden["crops"]), focal_length=focal)
        np.testing.assert_allclose(np.array(out.vertices), golden["out_focal"]["pred_vertices"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.array(out.hand_pose), golden["out_focal"]["hand_pose"], rtol=0, atol=2e-6)
    # F enters only through the first-pass mesh depth against tz = 2F / (size s): a small effect
    assert np.abs(golden["out_focal"]["hand_pose"] - golden["out"]["hand_pose"]).max() > 1e-5


def test_wilor_float_crops_equal_uint8(golden):
    model = load_golden_model(golden)
    a = model(mx.array(golden["crops"]))
    b = model(mx.array(golden["crops"].astype(np.float32)))
    np.testing.assert_allclose(np.array(a.vertices), np.array(b.vertices), atol=1e-6)


def test_wilor_input_window_gives_the_same_output(golden):
    """Only the middle 192 columns reach the network: sending just those (what the pipeline and the benchmark
    do) must not change a bit, and the window must be the columns WiLoR keeps."""
    model = load_golden_model(golden)
    crops = golden["crops"]
    window = model.input_window(crops)
    assert window.shape[1:] == (256, 192, 3) and np.shares_memory(window, crops)
    np.testing.assert_array_equal(window, crops[:, :, 32:-32])
    a = model(mx.array(crops))
    b = model(mx.array(np.ascontiguousarray(window)))
    np.testing.assert_array_equal(np.array(a.vertices), np.array(b.vertices))


def test_wilor_is_channel_sensitive(golden):
    """The network sees RGB: feeding BGR must change the answer (guards against a silent flip)."""
    model = load_golden_model(golden)
    a = model(mx.array(golden["crops"]))
    b = model(mx.array(golden["crops"][..., ::-1].copy()))
    assert np.abs(np.array(a.vertices) - np.array(b.vertices)).max() > 1e-5


# ---------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
@pytest.mark.parametrize("batch", [1, 2])
def test_wilor_shapes(mano_arrays, dtype, batch):
    model = WiLoR(TINY)
    model.mano.set_data(mano_arrays)
    model.set_dtype(dtype)
    out = model(mx.random.uniform(0, 255, (batch, 256, 256, 3)).astype(mx.uint8))
    assert out.vertices.shape == (batch, 778, 3)
    assert out.keypoints_3d.shape == (batch, 21, 3)
    assert out.cam.shape == (batch, 3) and out.betas.shape == (batch, 10)
    assert out.global_orient.shape == (batch, 1, 3) and out.hand_pose.shape == (batch, 15, 3)
    assert out.hand_pose_rotmat.shape == (batch, 15, 3, 3)
    assert out.vertices.dtype == mx.float32  # MANO always runs in float32
    assert np.isfinite(np.array(out.vertices)).all()


def test_wilor_deepcopy(mano_arrays):
    model = WiLoR(TINY)
    model.mano.set_data(mano_arrays)
    other = copy.deepcopy(model)
    x = mx.random.uniform(0, 255, (1, 256, 256, 3))
    np.testing.assert_array_equal(np.array(model(x).vertices), np.array(other(x).vertices))


@pytest.mark.parametrize(
    "shape, dtype, match",
    [((1, 192, 256, 3), mx.uint8, "shape"), ((1, 256, 224, 3), mx.uint8, "shape"), ((256, 256, 3), mx.uint8, "shape"), ((1, 256, 256, 4), mx.uint8, "shape"),
     ((0, 256, 256, 3), mx.uint8, "empty"), ((1, 256, 256, 3), mx.int32, "uint8 or float")],
)
def test_wilor_rejects_bad_crops(shape, dtype, match):
    with pytest.raises(ValueError, match=match):
        WiLoR(TINY)(mx.zeros(shape, dtype=dtype))


# ---------------------------------------------------------------- MANO / LBS


def _mano(arrays) -> MANO:
    m = MANO(WiLoRConfig().mano)
    m.set_data(arrays)
    return m


def _identity(B, n):
    return mx.broadcast_to(mx.eye(3), (B, n, 3, 3))


def test_zero_pose_returns_template(mano_arrays):
    out = _mano(mano_arrays)(mx.zeros((1, 10)), _identity(1, 1), _identity(1, 15))
    np.testing.assert_allclose(np.array(out.vertices[0]), mano_arrays["v_template"], atol=1e-7)
    joints16 = mano_arrays["J_regressor"] @ mano_arrays["v_template"]
    tips = mano_arrays["v_template"][[744, 320, 443, 554, 671]]
    expected = np.concatenate([joints16, tips])[list(WiLoRConfig().mano.joint_map)]
    np.testing.assert_allclose(np.array(out.joints[0]), expected, atol=1e-6)


def test_joint_rotation_moves_only_descendants(mano_arrays):
    arrays = dict(mano_arrays, posedirs=np.zeros_like(mano_arrays["posedirs"]))  # pure skinning
    m = _mano(arrays)
    joint = 4  # middle-finger MCP; descendants 5, 6
    R = np.tile(np.eye(3, dtype=np.float32), (1, 15, 1, 1))
    R[0, joint - 1] = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]  # 90 degrees about x
    rest = m(mx.zeros((1, 10)), _identity(1, 1), _identity(1, 15))
    posed = m(mx.zeros((1, 10)), _identity(1, 1), mx.array(R))
    moved = np.abs(np.array(posed.vertices[0] - rest.vertices[0])).max(axis=1) > 1e-6
    influence = arrays["lbs_weights"][:, [4, 5, 6]].sum(axis=1) > 0
    assert moved.any()
    np.testing.assert_array_equal(moved, influence)  # exactly the vertices skinned to the finger move
    # the rotated joint stays put; its child rotates 90 degrees about it
    J = arrays["J_regressor"] @ arrays["v_template"]
    from mlx_hands.models.lbs import rigid_transform

    posed_j, _ = rigid_transform(mx.concatenate([_identity(1, 1), mx.array(R)], 1), mx.array(J[None]),
                                 tuple(arrays["parents"]))
    posed_j = np.array(posed_j[0])
    np.testing.assert_allclose(posed_j[joint], J[joint], atol=1e-6)
    np.testing.assert_allclose(posed_j[5] - J[4], R[0, joint - 1] @ (J[5] - J[4]), atol=1e-6)
    np.testing.assert_allclose(posed_j[[1, 2, 3, 7, 10, 13]], J[[1, 2, 3, 7, 10, 13]], atol=1e-6)


def test_mano_rejects_wrong_shapes(mano_arrays):
    with pytest.raises(ValueError, match="posedirs"):
        _mano(dict(mano_arrays, posedirs=mano_arrays["posedirs"][:, :100]))
    with pytest.raises(ValueError, match="parents"):
        _mano(dict(mano_arrays, parents=np.r_[-1, 0, 1, 5, np.arange(4, 16) - 1]))


# ---------------------------------------------------------------- rotations vs float64 numpy


def _rodrigues64(aa):
    aa = np.asarray(aa, np.float64)
    th = np.linalg.norm(aa, axis=-1, keepdims=True)
    k = aa / np.where(th < 1e-12, 1, th)
    K = np.zeros(aa.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K = K - np.swapaxes(K, -1, -2)
    th = th[..., None]
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


def _random_aa(rng, n, angles):
    axis = rng.normal(size=(n, 3))
    return axis / np.linalg.norm(axis, axis=1, keepdims=True) * np.asarray(angles)[:, None]


@pytest.mark.parametrize(
    "angles",
    [np.linspace(0.01, 3.1, 200), np.full(50, np.pi - 1e-3), np.full(50, np.pi - 1e-5), np.full(20, np.pi),
     np.full(20, 1e-5), np.zeros(3)],
    ids=["range", "pi-1e-3", "pi-1e-5", "pi", "tiny", "zero"],
)
def test_rotmat_to_axis_angle(angles):
    rng = np.random.default_rng(0)
    aa = _random_aa(rng, len(angles), angles)
    R = _rodrigues64(aa)
    got = np.array(rotmat_to_axis_angle(mx.array(R.astype(np.float32)))).astype(np.float64)
    # at exactly pi the axis sign is arbitrary: compare the rotations, and the vector where it is unique
    np.testing.assert_allclose(_rodrigues64(got), R, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), angles, atol=2e-5 if angles.max() > 3.0 else 2e-6)
    if angles.max() < np.pi - 1e-2:
        np.testing.assert_allclose(got, aa, atol=2e-6)


def test_axis_angle_round_trip():
    rng = np.random.default_rng(1)
    aa = _random_aa(rng, 100, rng.uniform(0, 3.0, 100))
    R = np.array(axis_angle_to_rotmat(mx.array(aa.astype(np.float32))))
    np.testing.assert_allclose(R, _rodrigues64(aa), atol=2e-6)


def test_rot6d_matches_gram_schmidt():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 6))
    a1, a2 = x[:, :3], x[:, 3:]
    b1 = a1 / np.linalg.norm(a1, axis=1, keepdims=True)
    b2 = a2 - (b1 * a2).sum(1, keepdims=True) * b1
    b2 /= np.linalg.norm(b2, axis=1, keepdims=True)
    expected = np.stack([b1, b2, np.cross(b1, b2)], axis=-1)
    got = np.array(rot6d_to_rotmat(mx.array(x.astype(np.float32))))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got @ np.swapaxes(got, -1, -2), np.tile(np.eye(3), (64, 1, 1)), atol=1e-5)


def test_sample_points_matches_torch_grid_sample():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    feat = rng.normal(size=(2, 7, 5, 4)).astype(np.float32)
    uv = rng.uniform(-2, 8, size=(2, 50, 2)).astype(np.float32)  # inside, on the edge and outside
    uv[:, :5] = np.floor(uv[:, :5])  # exact pixel centres
    got = np.array(sample_points(mx.array(feat), mx.array(uv)))
    H, W = feat.shape[1:3]
    grid = torch.from_numpy(np.stack([uv[..., 0] / (W - 1) * 2 - 1, uv[..., 1] / (H - 1) * 2 - 1], -1))[:, :, None]
    ref = torch.nn.functional.grid_sample(torch.from_numpy(feat).permute(0, 3, 1, 2), grid, align_corners=True)
    np.testing.assert_allclose(got, ref[..., 0].permute(0, 2, 1).numpy(), atol=1e-5)


def test_wilor_compiled_forward_equals_eager():
    """The compiled forward (the default on GPUs) traces the same ops: here with the portable fallbacks of
    models/kernels.py, as on Metal; the CUDA kernels are checked in test_kernels.py."""
    model = synthetic.random_model(TINY)
    crops = mx.array(synthetic.make_crops(2))
    model.compile = False
    a = model(crops)
    model.compile = True
    b = model(crops)
    for name in ("vertices", "keypoints_3d", "hand_pose", "cam"):
        np.testing.assert_allclose(np.array(getattr(b, name)), np.array(getattr(a, name)), atol=1e-5)
