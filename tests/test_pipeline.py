"""numpy/OpenCV image route: crops, blur, mirror, camera, projection, image loading.

The golden fixture (tests/fixtures/pipeline_golden.npz) is written by scripts/make_pipeline_golden.py, which runs
WiLoR-mini's own predict_with_bboxes around a fake network (OpenCV 5.0, scikit-image 0.26).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mlx_hands.geometry import project
from mlx_hands.pipeline import postprocess, preprocess
from mlx_hands.pipeline.images import load_image, to_rgb_uint8

GOLDEN = Path(__file__).parent / "fixtures" / "pipeline_golden.npz"


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN))


def textured(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 127 + 60 * np.sin(x / 7.3)[..., None] * np.cos(y / 11.1)[..., None]
    return np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def full_frame_crop(image, center, size, is_right, patch=256):
    """The reference's recipe with full-frame copies: scipy blur of the whole (mirrored) frame, warpAffine."""
    ndimage = pytest.importorskip("scipy.ndimage")
    img = image
    cx, cy = center
    sigma = preprocess.blur_sigma(size, patch)
    if sigma > 0:
        img = ndimage.gaussian_filter(img.astype(np.float64), (sigma, sigma, 0), mode="nearest", truncate=4.0)
    if not is_right:
        img = np.ascontiguousarray(img[:, ::-1])
        cx = image.shape[1] - cx - 1
    M = preprocess.crop_transform(cx, cy, size, patch)
    return cv2.warpAffine(img, M, (patch, patch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# ------------------------------------------------------------------ crops vs the reference


def test_crops_match_reference(golden):
    crops, centers, sizes = preprocess.crop_hands(golden["image_rgb"], golden["boxes"], golden["is_right"], 2.5)
    ref = golden["crops_u8"].astype(np.float32)  # the reference's crops, RGB, rounded to uint8 for storage
    assert crops.shape == ref.shape == (4, 256, 256, 3) and crops.dtype == np.float32
    blurred = [preprocess.blur_sigma(s) > 0 for s in sizes]
    assert blurred == [False, True, True, False]  # the fixture covers both paths
    for i in range(len(crops)):
        err = np.abs(crops[i] - ref[i])
        assert err.mean() <= 0.26, (i, err.mean())  # brief: <= 1 grey level; rounding alone is 0.25
        if blurred[i]:
            assert err.max() <= 0.5 + 1e-3, (i, err.max())
        else:
            assert err.max() == 0, (i, err.max())  # uint8 path: the same OpenCV warp, bit for bit
    rows = crops[:, golden["crop_row_index"]]
    np.testing.assert_allclose(rows, golden["crop_rows"], atol=1e-3)  # full-precision rows, blurred included
    np.testing.assert_allclose(centers, (golden["boxes"][:, :2] + golden["boxes"][:, 2:]) / 2)


def test_crop_mirror_for_left_hands():
    img = textured(200, 300)
    c, s = np.array([120.3, 90.7]), 180.0
    left = preprocess.crop_hand(img, c, s, is_right=False)
    mirrored = preprocess.crop_hand(np.ascontiguousarray(img[:, ::-1]), (300 - 1 - c[0], c[1]), s, is_right=True)
    np.testing.assert_array_equal(left, mirrored)
    right = preprocess.crop_hand(img, c, s, is_right=True)
    assert np.abs(left - right).mean() > 10  # the flip matters on this texture


@pytest.mark.parametrize("is_right", [True, False])
@pytest.mark.parametrize(
    "box",
    [
        (600.5, 200.25, 900.1, 520.7),  # large interior: blurred region with interior edges
        (-20.5, 300.2, 340.8, 700.1),  # past the left and bottom edges
        (1470.2, 1080.3, 1599.0, 1199.0),  # small, corner
        (100.3, 50.7, 180.9, 160.2),  # small interior
        (500.2, 300.9, 1110.6, 880.3),  # sigma 0.98, blur radius 4 > the warp margin, interior edges
    ],
)
def test_region_crop_equals_full_frame_crop(box, is_right):
    img = textured(1200, 1600, seed=1)
    crops, centers, sizes = preprocess.crop_hands(img, np.array([box]), [is_right])
    ref = full_frame_crop(img, centers[0], sizes[0], is_right)
    tol = 1e-3 if preprocess.blur_sigma(sizes[0]) > 0 else 0  # float32 blur vs float64
    assert np.abs(crops[0] - ref).max() <= tol


def test_blur_matches_scipy_gaussian():
    ndimage = pytest.importorskip("scipy.ndimage")
    img = textured(61, 47, seed=2)
    for sigma in (0.11, 0.6, 1.7):
        ref = ndimage.gaussian_filter(img.astype(np.float64), (sigma, sigma, 0), mode="nearest", truncate=4.0)
        out = preprocess.gaussian_blur(img, sigma)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ref, atol=1e-3)


def test_blur_threshold_and_kernel():
    assert preprocess.blur_sigma(563.2) == 0.0  # d = 1.1 exactly: not blurred (strict >)
    assert preprocess.blur_sigma(600.0) == pytest.approx((600 / 512 - 1) / 2)
    k = preprocess.gaussian_kernel(1.0)
    assert len(k) == 2 * 4 + 1 and k.sum() == pytest.approx(1.0)
    assert len(preprocess.gaussian_kernel(0.11)) == 1  # radius int(4 * 0.11 + 0.5) = 0: scipy applies no blur
    assert len(preprocess.gaussian_kernel(0.15)) == 3  # radius int(1.1) = 1

def test_crop_outside_image_is_black():
    img = textured(50, 60)
    crop = preprocess.crop_hand(img, (-500.0, -500.0), 100.0, True)
    assert crop.shape == (256, 256, 3) and not crop.any()


def test_crop_keeps_channel_order():
    img = np.zeros((100, 100, 3), np.uint8)
    img[..., 0] = 200  # red only
    crop = preprocess.crop_hand(img, (50, 50), 40.0, True)
    assert crop[..., 0].min() == 200 and not crop[..., 1:].any()


# ------------------------------------------------------------------ post-processing vs the reference


@pytest.mark.parametrize("j", [0, 1])
def test_postprocess_matches_reference(golden, j):
    img = golden["image_rgb"]
    H, W = img.shape[:2]
    centers, sizes = preprocess.crop_boxes(golden["boxes"], 2.5)
    camera = postprocess.camera_intrinsics((W, H), focal_length=float(golden["focals"][j]))
    assert camera.fx == pytest.approx(golden[f"f{j}_scaled_focal"][0])
    hands = postprocess.make_hands(
        boxes=golden["boxes"], is_right=golden["is_right"], confidence=np.ones(4), centers=centers, sizes=sizes,
        image_wh=(W, H), camera=camera, cam=golden["in_pred_cam"], keypoints_3d=golden["in_pred_keypoints_3d"],
        global_orient=golden["in_global_orient"], hand_pose=golden["in_hand_pose"], betas=golden["in_betas"],
        vertices=golden["in_pred_vertices"],
    )
    assert [h.is_right for h in hands] == [True, False, True, False]
    kp2 = np.stack([h.keypoints_2d for h in hands])
    assert np.abs(kp2 - golden[f"f{j}_keypoints_2d"]).max() <= 0.5  # brief's bound; float32 keeps it near 1e-3
    np.testing.assert_allclose(kp2, golden[f"f{j}_keypoints_2d"], atol=0.01)
    np.testing.assert_allclose(np.stack([h.cam_t for h in hands]), golden[f"f{j}_cam_t"], rtol=1e-5, atol=1e-6)
    if j == 0:
        for name, field in [("pred_keypoints_3d", "keypoints_3d"), ("pred_vertices", "vertices"),
                            ("pred_cam", "crop_cam"), ("betas", "betas")]:
            np.testing.assert_allclose(np.stack([getattr(h, field) for h in hands]), golden[f"out_{name}"], atol=1e-7)
        np.testing.assert_allclose(np.stack([h.global_orient for h in hands]), golden["out_global_orient"][:, 0], atol=1e-7)
        np.testing.assert_allclose(np.stack([h.hand_pose for h in hands]), golden["out_hand_pose"], atol=1e-7)


def test_unmirror_is_reflection_conjugation():
    Rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    rng = np.random.default_rng(4)
    aa = rng.normal(0, 1, (2, 16, 3)).astype(np.float32)
    cam = np.array([[5.0, 0.1, 0.2], [5.0, 0.1, 0.2]], np.float32)
    kp = rng.normal(0, 0.05, (2, 21, 3)).astype(np.float32)
    cam2, kp2, _, go, hp = postprocess.unmirror(np.array([1, 0]), cam, kp, None, aa[:, :1], aa[:, 1:])
    S = np.diag([-1.0, 1.0, 1.0])
    want = np.stack([S @ Rotation.from_rotvec(v).as_matrix() @ S for v in aa[1].astype(np.float64)])
    got = Rotation.from_rotvec(np.concatenate([go[1], hp[1]]).astype(np.float64)).as_matrix()
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_array_equal(go[0], aa[0, :1])  # right hand untouched
    assert cam2[1, 1] == -0.1 and cam2[0, 1] == np.float32(0.1)
    np.testing.assert_array_equal(kp2[1, :, 0], -kp[1, :, 0])
    assert cam[1, 1] == np.float32(0.1)  # inputs not modified


def test_focal_length_px_equals_reference_units():
    wh = (1920, 1080)
    a = postprocess.camera_intrinsics(wh, focal_length_px=1400.0)
    b = postprocess.camera_intrinsics(wh, focal_length=1400.0 * 256 / 1920)
    assert a.fx == pytest.approx(b.fx) and (a.cx, a.cy) == (960.0, 540.0)
    assert postprocess.camera_intrinsics(wh).fx == pytest.approx(5000 / 256 * 1920)
    with pytest.raises(ValueError, match="focal_length_px"):
        postprocess.camera_intrinsics(wh, focal_length_px=-3)
    with pytest.raises(ValueError, match="not both"):
        postprocess.camera_intrinsics(wh, focal_length_px=1000, K=np.eye(3))


def test_intrinsics_principal_point():
    K = np.array([[1500.0, 0, 700.0], [0, 1500.0, 380.0], [0, 0, 1]])
    cam = postprocess.camera_intrinsics((1280, 720), K=K)
    centers, sizes = np.array([[300.0, 500.0]]), np.array([400.0])
    crop_cam = np.array([[6.0, 0.0, 0.0]])
    t = postprocess.cam_crop_to_full(crop_cam, centers, sizes, (1280, 720), cam)
    # the crop centre (weak-perspective origin) lands on the box centre through K
    np.testing.assert_allclose(project(t, cam)[0], centers[0], atol=1e-6)
    # and image scale at that depth equals the crop scale b*s/2 px per metre
    assert cam.fx / t[0, 2] == pytest.approx(400.0 * 6.0 / 2)
    # with the principal point at the centre it is the reference formula
    ref = postprocess.cam_crop_to_full(crop_cam, centers, sizes, (1280, 720), 1500.0)
    np.testing.assert_allclose(ref[0, 0], 2 * (300 - 640) / (400 * 6.0 + 1e-9))


def test_hand_json_is_json_ready(golden):
    import json

    centers, sizes = preprocess.crop_boxes(golden["boxes"][:1])
    hands = postprocess.make_hands(
        boxes=golden["boxes"][:1], is_right=[1], confidence=[0.9], centers=centers, sizes=sizes,
        image_wh=(512, 384), camera=postprocess.camera_intrinsics((512, 384)), cam=golden["in_pred_cam"][:1],
        keypoints_3d=golden["in_pred_keypoints_3d"][:1], global_orient=golden["in_global_orient"][:1],
        hand_pose=golden["in_hand_pose"][:1], betas=golden["in_betas"][:1],
    )
    from mlx_hands.export import to_json_dict

    d = json.loads(json.dumps(to_json_dict(hands[0])))
    assert d["side"] == "right" and len(d["keypoints_2d"]) == 21 and len(d["hand_pose"]) == 15
    assert "vertices" not in d and d["confidence"] == pytest.approx(0.9)


# ------------------------------------------------------------------ image loading


def test_load_image_formats(tmp_path):
    rgb = textured(20, 30)
    assert load_image(rgb) is not None and np.shares_memory(load_image(rgb), rgb)  # no copy for RGB uint8
    f = tmp_path / "a.png"
    cv2.imwrite(str(f), rgb[:, :, ::-1])  # files are stored BGR by OpenCV
    np.testing.assert_array_equal(load_image(f), rgb)
    np.testing.assert_array_equal(load_image(str(f)), rgb)
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(to_rgb_uint8(gray), np.repeat(gray[:, :, None], 3, axis=2))
    rgba = np.concatenate([rgb, np.full((20, 30, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgb)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 2), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((2, 10, 10, 3), np.uint8), r"\(H, W, 3\)"),
        ([[1, 2]], "numpy array"),
    ],
)
def test_load_image_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        load_image(bad, name="frame")


def test_load_image_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="corrupt.jpg"):
        load_image(bad)
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)
