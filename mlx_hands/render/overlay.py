"""Headless overlays with numpy and OpenCV: MANO meshes (z-buffered across hands), skeletons, boxes.

Camera convention (the pipeline's full-image camera, see mlx_hands/geometry.py): x right, y down, z forward,
in metres; a camera-space point X projects to `u = f·X_x/X_z + cx`, `v = f·X_y/X_z + cy` with (cx, cy) the
hand's `camera_center` (the image centre by default) and pixel centres at integer coordinates (OpenCV
drawing convention, the same as `Hand.keypoints_2d`).
Images are RGB uint8 (H, W, 3); colours below are RGB.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..geometry import Camera, oriented_faces, project
from ..types import Hand

# OpenPose hand order: 0 wrist, then 4 joints per finger (thumb, index, middle, ring, pinky), base to tip.
BONES = [(0 if j == 0 else 4 * f + j, 4 * f + j + 1) for f in range(5) for j in range(4)]  # 20 bones, 4 per finger
# Per-finger colours (thumb..pinky): warm hues for right hands, cool hues for left hands.
RIGHT_FINGER_COLORS = [(255, 40, 40), (255, 140, 0), (255, 220, 0), (255, 0, 170), (190, 90, 30)]
LEFT_FINGER_COLORS = [(0, 110, 255), (0, 210, 255), (0, 210, 110), (150, 80, 255), (40, 150, 150)]
RIGHT_COLOR = (255, 150, 90)  # box and mesh tint for right hands
LEFT_COLOR = (90, 170, 255)
WRIST_COLOR = (255, 255, 255)

_LIGHT = np.array([0.3, -0.5, -1.0]) / np.linalg.norm([0.3, -0.5, -1.0])  # towards the light: up-left, from the camera
_AMBIENT, _DIFFUSE = 0.3, 0.7
_NEAR = 1e-3  # metres; triangles with a vertex closer than this (or behind the camera) are skipped
_MAX_PAIRS = 1 << 21  # candidate (pixel, triangle) pairs per rasterization chunk, bounds memory


def right_faces(faces) -> np.ndarray:
    """MANO's right-hand faces (F, 3) int from an array or from a pipeline's `faces(is_right=True)` method."""
    if callable(faces):
        faces = faces(True)
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "iu":
        raise ValueError(f"faces must be an (F, 3) integer array of vertex indices, got {f.dtype} {f.shape}")
    return f


def hand_camera(hand: Hand, image_size: tuple[int, int]) -> Camera:
    """The camera a Hand was estimated in: its focal length (fx, fy if the caller's K had them unequal) and
    principal point (the image centre of `image_size` (W, H) unless it carries one)."""
    f = float(hand.focal_length)
    extra = hand.extra or {}
    c = hand.camera_center
    cx, cy = (image_size[0] / 2, image_size[1] / 2) if c is None else (float(c[0]), float(c[1]))
    return Camera(float(extra.get("fx", f)), float(extra.get("fy", f)), cx, cy)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of a mesh whose faces are wound counter-clockwise seen from outside."""
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = np.zeros_like(vertices)
    for k in range(3):
        for c in range(3):
            n[:, c] += np.bincount(faces[:, k], weights=fn[:, c], minlength=len(vertices))
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _bary_planes(tri_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Screen-space barycentrics are affine in (px, py): planes (T, 3, 3) with l_k = A·px + B·py + C, and the
    doubled signed area (T,) (0 for degenerate triangles, whose planes are then meaningless)."""
    x, y = tri_xy[..., 0].astype(np.float64), tri_xy[..., 1].astype(np.float64)
    x0, x1, x2 = x.T
    y0, y1, y2 = y.T
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(area != 0, 1.0 / area, 0.0)
    l1 = np.stack([(y2 - y0) * inv, (x0 - x2) * inv, ((x2 - x0) * y0 - (y2 - y0) * x0) * inv], 1)
    l2 = np.stack([(y0 - y1) * inv, (x1 - x0) * inv, ((y1 - y0) * x0 - (x1 - x0) * y0) * inv], 1)
    l0 = -l1 - l2
    l0[:, 2] += 1.0
    return np.stack([l0, l1, l2], 1), area


def interpolate(tri_xy: np.ndarray, values: np.ndarray, pix: np.ndarray, tri: np.ndarray, width: int) -> np.ndarray:
    """Screen-space linear interpolation of per-corner values (T, 3) at the pixels `rasterize` returned -> (N,)."""
    planes, _ = _bary_planes(tri_xy)
    vp = np.einsum("tk,tkc->tc", np.asarray(values, np.float64), planes)  # the value's own plane per triangle
    py, px = np.divmod(pix, width)
    return vp[:, 0].take(tri) * px + vp[:, 1].take(tri) * py + vp[:, 2].take(tri)


def rasterize(tri_xy: np.ndarray, tri_z: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer rasterization of screen-space triangles (no culling here; callers drop back faces).

    tri_xy (T, 3, 2) pixels, tri_z (T, 3) camera depth in metres (> 0); image_size (W, H). Returns (pix, tri):
    for every covered pixel (centre inside a triangle), its flat index y·W + x and the index of the nearest
    triangle there. Depth is compared per pixel as interpolated 1/z (exact under perspective), so triangles of
    different meshes occlude each other correctly. Vectorised as scanline spans: triangle → covered rows →
    covered pixels, so no pixel outside a triangle is visited.
    """
    w, h = image_size
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    planes, area = _bary_planes(tri_xy)
    y = tri_xy[..., 1]
    ymin = np.clip(np.ceil(y.min(1)), 0, h).astype(np.int64)
    ymax = np.clip(np.floor(y.max(1)), -1, h - 1).astype(np.int64)
    x = tri_xy[..., 0]
    keep = np.flatnonzero((np.abs(area) > 1e-9) & (ymax >= ymin) & (x.max(1) >= 0) & (x.min(1) <= w - 1))
    if len(keep) == 0:
        return empty
    izp = np.einsum("tk,tkc->tc", 1.0 / tri_z.astype(np.float64), planes)  # 1/z plane per triangle

    # Rows: for each kept triangle, every scanline it spans; the x-span on a row is where all l_k >= 0.
    nrow = (ymax - ymin + 1)[keep]
    rt = np.repeat(keep, nrow)
    ry = (ymin[rt] + np.arange(nrow.sum()) - np.repeat(np.cumsum(nrow) - nrow, nrow)).astype(np.float64)
    pl = planes[rt]  # (R, 3, 3)
    a = pl[:, :, 0]
    rest = pl[:, :, 1] * ry[:, None] + pl[:, :, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = -rest / a
    eps = 1e-7
    lo = np.where(a > 0, bound, -np.inf).max(1)
    hi = np.where(a < 0, bound, np.inf).min(1)
    flat_out = np.any((a == 0) & (rest < -eps), axis=1)
    xs = np.clip(np.ceil(lo - eps), 0, w)
    xe = np.clip(np.floor(hi + eps), -1, w - 1)
    cnt = np.where(flat_out, 0, np.maximum(xe - xs + 1, 0)).astype(np.int64)
    rows = np.flatnonzero(cnt)
    if len(rows) == 0:
        return empty
    rt, ry, xs, cnt = rt[rows], ry[rows].astype(np.int64), xs[rows].astype(np.int64), cnt[rows]

    # Buffers cover only the rows and columns touched (the hands' region), not the whole image.
    ox, oy = int(xs.min()), int(ry.min())
    rw = int((xs + cnt).max()) - ox
    size = (int(ry.max()) - oy + 1) * rw
    zbuf = np.zeros(size)  # 1/z of the nearest surface so far; 0 = empty
    tbuf = np.full(size, -1, np.int64)
    ends = np.cumsum(cnt)
    start = 0
    while start < len(rows):
        stop = max(int(np.searchsorted(ends, ends[start] - cnt[start] + _MAX_PAIRS, side="right")), start + 1)
        c = cnt[start:stop]
        first = np.cumsum(c) - c
        px = np.repeat(xs[start:stop], c) + (np.arange(c.sum()) - np.repeat(first, c))
        t = rt[start:stop]
        # 1/z along a row is A·px + (B·y + C); the bracket is per row.
        zp = np.repeat(izp[t, 0], c) * px + np.repeat(izp[t, 1] * ry[start:stop] + izp[t, 2], c)
        p = np.repeat((ry[start:stop] - oy) * rw - ox, c) + px
        np.maximum.at(zbuf, p, zp)
        win = zp >= zbuf[p]
        tbuf[p[win]] = np.repeat(t, c)[win]
        start = stop

    p = np.flatnonzero(tbuf >= 0)
    py, px = np.divmod(p, rw)
    return (py + oy) * w + px + ox, tbuf[p]


def _mesh_layers(hands: Sequence[Hand], faces: np.ndarray, image_size: tuple[int, int]):
    """Front-facing triangles of all hands with vertices: screen xy (T, 3, 2), depth (T, 3), Lambert shade at
    each corner (T, 3) and, per triangle, the index of its hand in `hands` (T,)."""
    xy, z, shade, owner = [], [], [], []
    for i, hand in enumerate(hands):
        if hand.vertices is None:
            continue
        v = np.asarray(hand.vertices, np.float64) + np.asarray(hand.cam_t, np.float64)
        if len(faces) and faces.max() >= len(v):
            raise ValueError(f"faces index vertex {faces.max()} but the hand has {len(v)} vertices")
        f = oriented_faces(faces, hand.is_right)
        # Back faces are hidden behind front faces of the same (closed but for the wrist) mesh: cull them, as
        # the reference's pyrender overlay does (single-sided material).
        fv = v[f]
        front = np.einsum("ij,ij->i", np.cross(fv[:, 1] - fv[:, 0], fv[:, 2] - fv[:, 0]), fv.mean(1)) < 0
        tri = f[front & np.all(fv[:, :, 2] > _NEAR, axis=1)]
        if len(tri) == 0:
            continue
        s = _AMBIENT + _DIFFUSE * np.clip(vertex_normals(v, f) @ _LIGHT, 0.0, 1.0)
        xy.append(project(v, hand_camera(hand, image_size))[tri])
        z.append(v[tri, 2])
        shade.append(s[tri])
        owner.append(np.full(len(tri), i))
    if not xy:
        return None
    return tuple(np.concatenate(a) for a in (xy, z, shade, owner))


def mesh_depth(hands: Sequence[Hand], faces: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Depth map (H, W) in metres of the nearest visible hand surface; inf where no hand is. image_size is (W, H)."""
    w, h = image_size
    out = np.full(h * w, np.inf)
    layers = _mesh_layers(hands, right_faces(faces), (w, h))
    if layers is not None:
        tri_xy, tri_z = layers[:2]
        pix, t = rasterize(tri_xy, tri_z, (w, h))
        out[pix] = 1.0 / interpolate(tri_xy, 1.0 / tri_z, pix, t, w)  # 1/z is affine on screen
    return out.reshape(h, w)


def render_mesh(image_rgb: np.ndarray, hands: Sequence[Hand], faces: np.ndarray, *, alpha: float = 0.6) -> np.ndarray:
    """Blend the shaded MANO meshes of all hands onto a copy of the image, nearest surface per pixel."""
    out = np.array(image_rgb, copy=True)
    h, w = out.shape[:2]
    layers = _mesh_layers(hands, right_faces(faces), (w, h))
    if layers is None:
        return out
    tri_xy, tri_z, tri_shade, owner = layers
    pix, t = rasterize(tri_xy, tri_z, (w, h))
    if len(pix) == 0:
        return out
    shade = interpolate(tri_xy, tri_shade, pix, t, w)  # Gouraud shading
    # Colour = hand colour x shade, looked up in a (hand, 256 shade levels) table: cheap per pixel.
    base = np.array([RIGHT_COLOR if hd.is_right else LEFT_COLOR for hd in hands], np.float64)
    lut = np.clip(base[:, None, :] * np.linspace(0, 1, 256)[None, :, None] + 0.5, 0, 255).astype(np.uint8)
    idx = owner.take(t) * 256 + np.clip(shade * 255 + 0.5, 0, 255).astype(np.int64)
    layer = out.copy()
    rgb = np.dtype((np.void, 3))  # one pixel as a 3-byte item: much faster fancy assignment than (N, 3) rows
    layer.view(rgb).reshape(-1)[pix] = lut.reshape(-1, 3).take(idx, axis=0).view(rgb).reshape(-1)
    mask = np.zeros(h * w, np.uint8)
    mask[pix] = 1
    blended = cv2.addWeighted(out, 1.0 - alpha, layer, alpha, 0.0)
    cv2.copyTo(blended, mask.reshape(h, w), out)
    return out


def _thickness(image_shape) -> int:
    return max(1, int(round(max(image_shape[:2]) / 500)))


def draw_skeleton(image_rgb: np.ndarray, hand: Hand, *, thickness: int | None = None) -> np.ndarray:
    """Draw the 21-keypoint skeleton in place (per-finger colours; warm = right hand, cool = left hand)."""
    t = thickness or _thickness(image_rgb.shape)
    k = np.asarray(hand.keypoints_2d, np.float64)
    if not np.all(np.isfinite(k)):
        return image_rgb
    colours = RIGHT_FINGER_COLORS if hand.is_right else LEFT_FINGER_COLORS
    pts = np.round(k).astype(np.int32)
    for i, (a, b) in enumerate(BONES):
        cv2.line(image_rgb, tuple(map(int, pts[a])), tuple(map(int, pts[b])), colours[i // 4], t + 1, cv2.LINE_AA)
    for j in range(21):
        c = WRIST_COLOR if j == 0 else colours[(j - 1) // 4]
        cv2.circle(image_rgb, tuple(map(int, pts[j])), t + 2, c, -1, cv2.LINE_AA)
        cv2.circle(image_rgb, tuple(map(int, pts[j])), t + 2, (0, 0, 0), 1, cv2.LINE_AA)
    return image_rgb


def hand_label(hand: Hand) -> str:
    label = f"{'Right' if hand.is_right else 'Left'} {hand.confidence:.2f}"
    return label if hand.track_id is None else f"{label} #{hand.track_id}"


def draw_box(image_rgb: np.ndarray, hand: Hand, *, thickness: int | None = None) -> np.ndarray:
    """Draw the detection box in place, labelled with side, confidence and track id (when set)."""
    t = thickness or _thickness(image_rgb.shape)
    x1, y1, x2, y2 = (int(round(c)) for c in np.asarray(hand.box, np.float64))
    colour = RIGHT_COLOR if hand.is_right else LEFT_COLOR
    cv2.rectangle(image_rgb, (x1, y1), (x2, y2), colour, t + 1, cv2.LINE_AA)
    scale = 0.45 * t
    (tw, th), base = cv2.getTextSize(hand_label(hand), cv2.FONT_HERSHEY_SIMPLEX, scale, t)
    ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2  # above the box, or inside it at the top
    cv2.rectangle(image_rgb, (x1, ty - th - base), (x1 + tw + 4, ty + 2), colour, -1)
    cv2.putText(image_rgb, hand_label(hand), (x1 + 2, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), t, cv2.LINE_AA)
    return image_rgb


def draw_hands(
    image_rgb: np.ndarray,
    hands: Sequence[Hand],
    faces: np.ndarray | None,
    *,
    mesh: bool = True,
    skeleton: bool = True,
    boxes: bool = True,
    alpha: float = 0.6,
) -> np.ndarray:
    """Annotated copy of an RGB uint8 image: meshes (if `faces` is given and hands carry vertices), then
    skeletons, then labelled boxes. `faces` are MANO's right-hand faces (1538, 3) (or `pipe.faces`, the
    pipeline's method); left hands are rewound here."""
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"draw_hands expects an RGB uint8 image (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if mesh and faces is not None:
        out = render_mesh(image_rgb, hands, faces, alpha=alpha)
    else:
        out = image_rgb.copy()
    for hand in hands:
        if skeleton:
            draw_skeleton(out, hand)
    for hand in hands:
        if boxes:
            draw_box(out, hand)
    return out
