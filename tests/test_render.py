"""Overlays on a synthetic hand: what a person would see (coverage, occlusion, colours, skeleton, normals).

Also home of `make_hand`, the synthetic `Hand` used by test_export.py and test_video.py.
Run as a script to regenerate docs/example.png: `python tests/test_render.py`.
"""

from __future__ import annotations

import time
from functools import lru_cache

import cv2
import numpy as np
import pytest

from mlx_hands.geometry import Camera
from mlx_hands.geometry import project as _project
from mlx_hands.types import Hand
from mlx_hands.render.overlay import (
    BONES,
    LEFT_FINGER_COLORS,
    RIGHT_FINGER_COLORS,
    draw_hands,
    interpolate,
    mesh_depth,
    oriented_faces,
    rasterize,
    vertex_normals,
)
from synth import FINGERTIP_IDS, make_mano


def project(points, focal, image_size):
    """Camera-space points -> pixels with the principal point at the image centre."""
    return _project(points, Camera(focal, focal, image_size[0] / 2, image_size[1] / 2))

W, H = 640, 480
FOCAL = 5000 / 256 * max(W, H)
# MANO joint -> OpenPose: wrist, then thumb, index, middle, ring, pinky (3 joints + tip each)
_OPENPOSE = [0, 13, 14, 15, "thumb", 1, 2, 3, "index", 4, 5, 6, "middle", 10, 11, 12, "ring", 7, 8, 9, "pinky"]


@lru_cache(maxsize=1)
def _mano():
    return make_mano(0)


def _rodrigues(r: np.ndarray) -> np.ndarray:
    a = np.linalg.norm(r)
    if a < 1e-12:
        return np.eye(3)
    k = r / a
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def posed_mano(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain numpy LBS of the synthetic MANO (no blend shapes). pose (16, 3) axis-angle ->
    vertices (778, 3), OpenPose keypoints (21, 3), faces (1538, 3); root joint at the origin."""
    m = _mano()
    v = m["v_template"].astype(np.float64)
    J = m["J_regressor"] @ v
    G = np.zeros((16, 4, 4))
    for j in range(16):
        local = np.eye(4)
        local[:3, :3] = _rodrigues(pose[j])
        local[:3, 3] = J[j] - (J[m["parents"][j]] if j else 0)
        G[j] = local if j == 0 else G[m["parents"][j]] @ local
    rel = G.copy()
    rel[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], J)
    T = np.einsum("vj,jab->vab", m["lbs_weights"], rel)
    verts = np.einsum("vab,vb->va", T[:, :3, :3], v) + T[:, :3, 3]
    joints = G[:, :3, 3]
    kp = np.stack([joints[i] if isinstance(i, int) else verts[FINGERTIP_IDS[i]] for i in _OPENPOSE])
    return verts - joints[0], kp - joints[0], m["faces"]


def _pose(curl: float) -> np.ndarray:
    pose = np.zeros((16, 3))
    for j in range(1, 13):  # curl the four fingers towards the palm (-z), more at the distal joints
        pose[j] = [-curl * (1 + (j - 1) % 3 * 0.5), 0.0, 0.0]
    pose[13:] = [[0.0, 0.0, -curl * 0.5]] * 3
    return pose


def _global(spin: float) -> np.ndarray:
    # synthetic hand: fingers along +y, palm towards -z; turn the fingers up in the image (y down), then spin
    return _rodrigues(np.array([0.0, spin, 0.0])) @ _rodrigues(np.array([0.0, 0.0, np.pi]))


def make_hand(
    is_right: bool = True,
    centre: tuple[float, float] = (W / 2, H / 2),
    depth: float = 15.0,
    *,
    image_size: tuple[int, int] = (W, H),
    focal: float | None = None,
    curl: float = 0.3,
    spin: float = 0.0,
    confidence: float = 0.9,
    track_id: int | None = None,
) -> Hand:
    """A synthetic posed hand whose wrist projects to `centre` (pixels) at `depth` metres."""
    w, h = image_size
    focal = FOCAL if focal is None else focal
    verts, kp, _ = posed_mano(_pose(curl))
    R = _global(spin)
    verts, kp = verts @ R.T, kp @ R.T
    if not is_right:
        verts, kp = verts * [-1, 1, 1], kp * [-1, 1, 1]
    cam_t = np.array([(centre[0] - w / 2) * depth / focal, (centre[1] - h / 2) * depth / focal, depth])
    k2 = project(kp + cam_t, focal, image_size)
    uv = project(verts + cam_t, focal, image_size)
    box = np.concatenate([uv.min(0) - 5, uv.max(0) + 5])
    return Hand(
        is_right=is_right,
        confidence=confidence,
        box=box,
        keypoints_2d=k2,
        keypoints_3d=kp,
        cam_t=cam_t,
        focal_length=float(focal),
        global_orient=np.zeros(3),
        hand_pose=np.zeros((15, 3)),
        betas=np.zeros(10),
        crop_cam=np.array([1.0, 0.0, 0.0]),
        vertices=verts,
        track_id=track_id,
    )


def faces() -> np.ndarray:
    return _mano()["faces"]


def _mesh_mask(hands, bg=0, **kw) -> tuple[np.ndarray, np.ndarray]:
    img = np.full((H, W, 3), bg, np.uint8)
    out = draw_hands(img, hands, faces(), skeleton=False, boxes=False, **kw)
    return out, np.any(out != img, axis=2)


def _silhouette(hand: Hand) -> np.ndarray:
    """Independent reference: fill every projected triangle with OpenCV (no depth, no culling)."""
    uv = project(hand.vertices + hand.cam_t, hand.focal_length, (W, H))
    mask = np.zeros((H, W), np.uint8)
    shift = 4  # sub-pixel precision
    for tri in np.round(uv[faces()] * (1 << shift)).astype(np.int32):
        cv2.fillConvexPoly(mask, tri, 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)


def test_mesh_covers_projected_hand_and_nothing_else():
    hand = make_hand(True)
    out, mask = _mesh_mask([hand], alpha=1.0)
    ref = _silhouette(hand)  # OpenCV fills boundary pixels generously: compare up to one pixel
    k = np.ones((3, 3), np.uint8)
    inner = cv2.erode(ref.astype(np.uint8), k).astype(bool)
    outer = cv2.dilate(ref.astype(np.uint8), k).astype(bool)
    assert inner.sum() > 1500, "the test hand should be a sizeable object"
    assert np.all(mask[inner]), f"{np.sum(inner & ~mask)} pixels inside the hand not drawn"
    assert not np.any(mask & ~outer), f"{np.sum(mask & ~outer)} pixels drawn outside the hand"
    assert (mask & ref).sum() / (mask | ref).sum() > 0.9
    # every projected vertex lies on or next to a covered pixel
    uv = np.round(project(hand.vertices + hand.cam_t, FOCAL, (W, H))).astype(int)
    near = cv2.dilate(mask.astype(np.uint8), k).astype(bool)
    assert near[uv[:, 1], uv[:, 0]].mean() > 0.99


def test_mesh_moves_with_cam_t():
    a = _mesh_mask([make_hand(True, centre=(200, 240))], alpha=1.0)[1]
    b = _mesh_mask([make_hand(True, centre=(440, 240))], alpha=1.0)[1]
    ya, xa = np.nonzero(a)
    yb, xb = np.nonzero(b)
    assert abs((xb.mean() - xa.mean()) - 240) < 2 and abs(yb.mean() - ya.mean()) < 2


def test_mesh_uses_the_hands_camera():
    # a principal point off the image centre (the caller's K) moves the projected mesh with it
    plain = make_hand(True)
    shifted = make_hand(True)
    shifted.camera_center = np.array([W / 2 + 20, H / 2 + 10])
    a, b = _mesh_mask([plain], alpha=1.0)[1], _mesh_mask([shifted], alpha=1.0)[1]
    (ya, xa), (yb, xb) = np.nonzero(a), np.nonzero(b)
    assert abs(xb.mean() - xa.mean() - 20) < 1 and abs(yb.mean() - ya.mean() - 10) < 1


def _is_warm(rgb) -> bool:
    return rgb[0] > rgb[2] + 30


def _is_cool(rgb) -> bool:
    return rgb[2] > rgb[0] + 30


def test_left_and_right_meshes_have_different_colours():
    out_r, m_r = _mesh_mask([make_hand(True)], bg=40)
    out_l, m_l = _mesh_mask([make_hand(False)], bg=40)
    mean_r, mean_l = out_r[m_r].mean(0), out_l[m_l].mean(0)
    assert _is_warm(mean_r) and _is_cool(mean_l), (mean_r, mean_l)


@pytest.mark.parametrize("order", [1, -1])
@pytest.mark.parametrize("right_in_front", [True, False])
def test_nearer_hand_occludes_farther(right_in_front, order):
    # The two hands overlap on screen; the nearer one must win every overlapping pixel, whatever the list order.
    near, far = 12.0, 16.0
    right = make_hand(True, centre=(310, 240), depth=near if right_in_front else far)
    left = make_hand(False, centre=(330, 240), depth=far if right_in_front else near)
    hands = [right, left][::order]
    out, mask = _mesh_mask(hands, alpha=1.0)
    overlap = _silhouette(right) & _silhouette(left)
    overlap = cv2.erode(overlap.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # skip edges
    assert overlap.sum() > 300
    px = out[overlap].astype(int)
    frac_warm = np.mean(px[:, 0] > px[:, 2])
    if right_in_front:
        assert frac_warm > 0.99, frac_warm
    else:
        assert frac_warm < 0.01, frac_warm


def test_rasterize_depth_test_per_pixel():
    # Two interpenetrating triangles: which one is nearer flips across the image, so a painter's algorithm
    # (one depth per triangle) gets half the pixels wrong; a per-pixel test gets them right.
    xy = np.array([[[0, 0], [99, 0], [0, 99]], [[0, 0], [99, 0], [0, 99]]], np.float64)
    z = np.array([[1.0, 2.0, 1.0], [2.0, 1.0, 2.0]])  # a is nearer on the left, b on the right
    pix, tri = rasterize(xy, z, (100, 100))
    x = pix % 100
    assert len(np.unique(pix)) == len(pix) == 5050
    assert np.all(tri[x < 40] == 0) and np.all(tri[x > 60] == 1)


def test_rasterize_covers_exactly_the_triangle_and_interpolates():
    xy = np.array([[[10.0, 10.0], [50.0, 10.0], [10.0, 50.0]]])
    pix, tri = rasterize(xy, np.ones((1, 3)), (64, 64))
    x, y = pix % 64, pix // 64
    assert np.all((x >= 10) & (y >= 10) & (x + y <= 60))
    assert len(pix) == ((np.add.outer(np.arange(64), np.arange(64)) <= 60)[10:, 10:]).sum()
    # linear functions are reproduced exactly
    np.testing.assert_allclose(interpolate(xy, xy[..., 0], pix, tri, 64), x, atol=1e-9)
    np.testing.assert_allclose(interpolate(xy, xy[..., 1], pix, tri, 64), y, atol=1e-9)
    # off-screen parts are clipped, not wrapped around
    pix, _ = rasterize(xy - 30, np.ones((1, 3)), (64, 64))
    assert len(pix) > 0 and ((pix % 64) <= 20).all() and ((pix // 64) <= 20).all()


def _signed_volume(v, f) -> float:
    t = v[f]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6)


def test_normals_point_outwards_for_both_sides():
    # Outward winding <=> positive signed volume (the wrist hole barely matters for this mesh).
    m = _mano()
    v = m["v_template"].astype(np.float64)
    for is_right, verts in [(True, v), (False, v * [-1, 1, 1])]:
        assert _signed_volume(verts, oriented_faces(m["faces"], is_right)) > 5e-5, is_right
    assert _signed_volume(v * [-1, 1, 1], m["faces"]) < -5e-5  # mirrored but not rewound: inside out
    # vertex normals agree with the face winding: at the palm centre (palm faces -z) they point to -z
    n = vertex_normals(v, m["faces"])
    palm = (np.abs(v[:, 0]) < 0.01) & (np.abs(v[:, 1] - 0.025) < 0.01) & (v[:, 2] < 0)
    assert palm.sum() > 2 and np.all(n[palm, 2] < -0.9)


def test_visible_surface_is_the_near_side_for_both_sides():
    # Palm towards the camera: the visible surface must be the palm (near) side for both hands. Wrong winding
    # would cull the near side and show the back of the hand, ~2 cm farther away.
    depths = {}
    for is_right in (True, False):
        hand = make_hand(is_right, curl=0.0)
        d = mesh_depth([hand], faces(), (W, H))
        seen = np.isfinite(d)
        depths[is_right] = d[seen].mean() - hand.cam_t[2]
        bright = draw_hands(np.zeros((H, W, 3), np.uint8), [hand], faces(), alpha=1.0, skeleton=False, boxes=False)
        assert bright[seen].max(1).mean() > 150  # lit from the camera side, not just ambient
    assert abs(depths[True] - depths[False]) < 1e-3 and depths[True] < -0.005, depths
    wrong = make_hand(False, curl=0.0)
    wrong.is_right = True  # mirrored mesh drawn with right-hand winding
    d = mesh_depth([wrong], faces(), (W, H))
    assert d[np.isfinite(d)].mean() - wrong.cam_t[2] > depths[True] + 0.01


def test_mesh_depth_is_nearest_surface_in_metres():
    hand = make_hand(True, curl=0.0)
    d = mesh_depth([hand], faces(), (W, H))
    z = hand.vertices[:, 2] + hand.cam_t[2]
    seen = d[np.isfinite(d)]
    assert seen.min() >= z.min() - 1e-6 and seen.max() <= z.max() + 1e-6


def test_skeleton_drawn_with_side_colours():
    img = np.zeros((H, W, 3), np.uint8)
    for is_right, palette in [(True, RIGHT_FINGER_COLORS), (False, LEFT_FINGER_COLORS)]:
        hand = make_hand(is_right, depth=20.0)
        out = draw_hands(img, [hand], faces(), mesh=False, boxes=False)
        for i, (a, b) in enumerate(BONES):
            mid = np.round((hand.keypoints_2d[a] * 0.5 + hand.keypoints_2d[b] * 0.5)).astype(int)
            if np.linalg.norm(hand.keypoints_2d[a] - hand.keypoints_2d[b]) < 12:
                continue  # too short: the joint dots cover the middle
            got = out[mid[1], mid[0]].astype(int)
            assert np.abs(got - palette[i // 4]).max() < 40, (is_right, i, got, palette[i // 4])
        changed = np.any(out != 0, axis=2)
        ys, xs = np.nonzero(changed)
        x1, y1, x2, y2 = hand.box
        assert xs.min() >= x1 - 10 and xs.max() <= x2 + 10 and ys.min() >= y1 - 10 and ys.max() <= y2 + 10
    assert set(RIGHT_FINGER_COLORS).isdisjoint(LEFT_FINGER_COLORS)


def test_boxes_and_labels():
    img = np.zeros((H, W, 3), np.uint8)
    hand = make_hand(True, track_id=7)
    out = draw_hands(img, [hand], faces(), mesh=False, skeleton=False)
    x1, y1, x2, y2 = np.round(hand.box).astype(int)
    assert np.any(out[(y1 + y2) // 2, x1 - 2 : x1 + 3] != 0)  # left edge of the box
    assert np.any(out[max(y1 - 12, 0) : y1, x1 : x1 + 40] != 0)  # label above it
    assert np.all(out[(y1 + y2) // 2, (x1 + x2) // 2] == 0)  # box is not filled


def test_draw_hands_leaves_input_alone_and_handles_edge_cases():
    img = np.full((H, W, 3), 17, np.uint8)
    before = img.copy()
    draw_hands(img, [make_hand(True), make_hand(False)], faces())
    np.testing.assert_array_equal(img, before)
    np.testing.assert_array_equal(draw_hands(img, [], faces()), img)
    no_mesh = make_hand(True)
    no_mesh.vertices = None
    assert draw_hands(img, [no_mesh], faces(), skeleton=False, boxes=False).tolist() == img.tolist()
    behind = make_hand(True, depth=-5.0)
    draw_hands(img, [behind], faces())  # behind the camera: nothing to see, no crash
    off = make_hand(True, centre=(-2000.0, 100.0))
    np.testing.assert_array_equal(draw_hands(img, [off], faces(), skeleton=False, boxes=False), img)
    class Pipe:
        def faces(self, is_right=True):
            return faces()

    np.testing.assert_array_equal(draw_hands(img, [off], Pipe().faces), draw_hands(img, [off], faces()))
    with pytest.raises(ValueError, match="778 vertices"):
        draw_hands(img, [make_hand(True)], faces() + 1000)
    with pytest.raises(ValueError, match="integer array"):
        draw_hands(img, [make_hand(True)], faces().astype(float))
    with pytest.raises(ValueError, match="RGB uint8"):
        draw_hands(img.astype(np.float32), [], faces())
    with pytest.raises(ValueError, match="alpha"):
        draw_hands(img, [], faces(), alpha=2.0)


def test_render_fast_enough_for_video():
    # Two hands at 1280x720; the budget here is loose (shared CI), the real number is in docs/usage.md.
    size = (1280, 720)
    f = 5000 / 256 * 1280
    hands = [make_hand(side, (x, 360), 12.0, image_size=size, focal=f) for side, x in [(True, 500), (False, 780)]]
    img = np.zeros((720, 1280, 3), np.uint8)
    draw_hands(img, hands, faces())
    t0 = time.perf_counter()
    for _ in range(3):
        draw_hands(img, hands, faces())
    assert (time.perf_counter() - t0) / 3 < 0.25


def render_example(path: str = "docs/example.png") -> np.ndarray:
    """The README picture: two synthetic hands (procedural mesh, not MANO data) over a gradient."""
    w, h = 640, 400
    f = 5000 / 256 * w
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([40 + 30 * yy / h, 45 + 25 * xx / w, 60 + 40 * yy / h], -1).astype(np.uint8)
    hands = [
        make_hand(True, (240, 340), 5.5, image_size=(w, h), focal=f, curl=0.35, spin=0.8, confidence=0.97, track_id=0),
        make_hand(False, (420, 350), 6.5, image_size=(w, h), focal=f, curl=0.2, spin=-0.5, confidence=0.91, track_id=1),
    ]
    out = draw_hands(img, hands, faces())
    label = "synthetic hand mesh (not MANO data)"
    cv2.putText(out, label, (10, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1, cv2.LINE_AA)
    if path:
        cv2.imwrite(path, out[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out


if __name__ == "__main__":
    render_example()
