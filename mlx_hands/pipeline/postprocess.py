"""From WiLoR's crop-frame outputs to the full image: un-mirroring of left hands, the full-image camera,
2D keypoints, and the `Hand` records. numpy only.

Follows WiLoR-mini `predict_with_bboxes` / WiLoR `demo.py` and `utils.cam_crop_to_full`.

Cameras. WiLoR predicts a weak-perspective camera (s, tx, ty) for each crop, assuming a crop camera of focal
F = 5000 px at the 256-px crop size. The reference turns it into a full-image perspective camera with focal
f = F * max(W, H) / 256 pixels and the principal point at the image centre, and places the hand at
cam_t = (tx + 2 (cx - W/2) / (b s), ty + 2 (cy - H/2) / (b s), 2 f / (b s)), b = crop side, c = box centre.
Three ways to choose the camera (`camera_intrinsics`):
- `focal_length=F` (crop units, the reference's kwarg; default 5000): f = F * max(W, H) / 256;
- `focal_length_px=f` (your camera's focal length in pixels of this image): used as is; it is the same as
  F = f * 256 / max(W, H) in the reference's units;
- `K` (3x3 intrinsics, pixels): fx, fy and the principal point (cx, cy) of a calibrated camera. cam_t is then
  the hand's translation in that camera, such that projecting keypoints_3d + cam_t with K gives
  keypoints_2d; the depth uses the mean of fx and fy (the crop is isotropic, so fx != fy cannot be matched in
  both axes; real cameras have fx ~= fy).
"""

from __future__ import annotations

import numpy as np

from ..config import CROP_SIZE as PATCH_SIZE
from ..config import FOCAL_LENGTH
from ..geometry import Camera, project
from ..types import Hand


def scaled_focal_length(image_wh, focal_length: float = FOCAL_LENGTH, patch_size: int = PATCH_SIZE) -> float:
    """The reference's full-image focal: F / patch * max(W, H) pixels."""
    return float(focal_length) / patch_size * float(max(image_wh))


def camera_intrinsics(
    image_wh,
    *,
    focal_length: float | None = None,
    focal_length_px: float | None = None,
    K: np.ndarray | None = None,
    patch_size: int = PATCH_SIZE,
) -> Camera:
    """Pick the full-image camera; at most one of focal_length_px and K may be given (see module docstring)."""
    W, H = float(image_wh[0]), float(image_wh[1])
    if focal_length_px is not None and K is not None:
        raise ValueError("give either focal_length_px or K (intrinsics), not both")
    if K is not None:
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"K must be a finite 3x3 intrinsics matrix with fx, fy > 0, got {K.tolist()}")
        return Camera(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    if focal_length_px is not None:
        f = float(focal_length_px)
        if not np.isfinite(f) or f <= 0:
            raise ValueError(f"focal_length_px must be a positive number of pixels, got {focal_length_px!r}")
    else:
        F = FOCAL_LENGTH if focal_length is None else float(focal_length)
        if not np.isfinite(F) or F <= 0:
            raise ValueError(f"focal_length must be positive (crop units, default 5000), got {focal_length!r}")
        f = scaled_focal_length((W, H), F, patch_size)
    return Camera(f, f, W / 2.0, H / 2.0)


def unmirror(
    is_right: np.ndarray,
    cam: np.ndarray,
    keypoints_3d: np.ndarray,
    vertices: np.ndarray | None,
    global_orient: np.ndarray,
    hand_pose: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Left hands were cut from the mirrored image; mirror their outputs back (new arrays, inputs untouched).

    cam (N, 3): tx * (2 is_right - 1). Points (N, K, 3): x negated. Axis-angle (N, J, 3): y and z negated,
    i.e. R -> diag(-1, 1, 1) R diag(-1, 1, 1).
    """
    left = np.asarray(is_right).reshape(-1) == 0
    cam = np.array(cam, dtype=np.float32, copy=True)
    kp = np.array(keypoints_3d, dtype=np.float32, copy=True)
    go = np.array(global_orient, dtype=np.float32, copy=True)
    hp = np.array(hand_pose, dtype=np.float32, copy=True)
    vs = None if vertices is None else np.array(vertices, dtype=np.float32, copy=True)
    cam[left, 1] *= -1.0
    kp[left, :, 0] *= -1.0
    if vs is not None:
        vs[left, :, 0] *= -1.0
    go[left, ..., 1:] *= -1.0
    hp[left, ..., 1:] *= -1.0
    return cam, kp, vs, go, hp


def cam_crop_to_full(
    cam: np.ndarray,
    centers: np.ndarray,
    sizes: np.ndarray,
    image_wh,
    focal: float | Camera,
) -> np.ndarray:
    """Weak-perspective crop cameras -> full-image translations (N, 3), metres.

    cam (N, 3) (s, tx, ty) with tx already sign-corrected for left hands; centers (N, 2) unmirrored box centres
    and sizes (N,) crop sides in pixels; focal: f in pixels (principal point at the image centre) or a Camera.
    """
    cam = np.asarray(cam, dtype=np.float64).reshape(-1, 3)
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1)
    if isinstance(focal, Camera):
        camera = focal
    else:
        camera = Camera(float(focal), float(focal), float(image_wh[0]) / 2.0, float(image_wh[1]) / 2.0)
    bs = sizes * cam[:, 0] + 1e-9
    tz = 2.0 * camera.focal / bs
    # hand centre at the box centre: (c - principal point) / f = t_xy / t_z
    tx = cam[:, 1] + (centers[:, 0] - camera.cx) * tz / camera.fx
    ty = cam[:, 2] + (centers[:, 1] - camera.cy) * tz / camera.fy
    return np.stack([tx, ty, tz], axis=-1)


def make_hands(
    *,
    boxes: np.ndarray,
    is_right: np.ndarray,
    confidence: np.ndarray,
    centers: np.ndarray,
    sizes: np.ndarray,
    image_wh,
    camera: Camera,
    cam: np.ndarray,
    keypoints_3d: np.ndarray,
    global_orient: np.ndarray,
    hand_pose: np.ndarray,
    betas: np.ndarray,
    vertices: np.ndarray | None = None,
    detector_keypoints: np.ndarray | None = None,
) -> list[Hand]:
    """Post-process a batch of raw (crop-frame, mirrored for left hands) WiLoR outputs into Hand records.

    All arrays are numpy with the batch first; see WiLoROutput for shapes. 3D outputs stay in metres in the
    camera axes (x right, y down, z forward), relative to cam_t.
    """
    is_right = np.asarray(is_right).reshape(-1)
    cam, kp3, verts, go, hp = unmirror(is_right, cam, keypoints_3d, vertices, global_orient, hand_pose)
    cam_t = cam_crop_to_full(cam, centers, sizes, image_wh, camera)
    kp2 = project(np.asarray(kp3, np.float64) + cam_t[:, None, :], camera)
    extra = {} if camera.fx == camera.fy else {"fx": camera.fx, "fy": camera.fy}
    hands = []
    for i in range(len(is_right)):
        hands.append(
            Hand(
                is_right=bool(is_right[i] != 0),
                confidence=float(confidence[i]),
                box=np.asarray(boxes[i], dtype=np.float32).copy(),
                keypoints_2d=kp2[i].astype(np.float32),
                keypoints_3d=kp3[i],
                cam_t=cam_t[i].astype(np.float32),
                focal_length=camera.focal,
                camera_center=np.array([camera.cx, camera.cy], dtype=np.float32),
                global_orient=go[i].reshape(3),
                hand_pose=hp[i].reshape(-1, 3),
                betas=np.asarray(betas[i], dtype=np.float32).copy(),
                crop_cam=cam[i],
                vertices=None if verts is None else verts[i],
                detector_keypoints=None if detector_keypoints is None else np.asarray(detector_keypoints[i], np.float32),
                extra=dict(extra),
            )
        )
    return hands
