"""The per-hand result record. Units: metres for 3D, image pixels for 2D."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Hand:
    is_right: bool
    confidence: float  # detector score in [0, 1]; 1.0 for caller-supplied boxes
    box: np.ndarray  # (4,) x1, y1, x2, y2 in image pixels
    keypoints_2d: np.ndarray  # (21, 2) image pixels, OpenPose hand order
    keypoints_3d: np.ndarray  # (21, 3) metres, camera axes, relative to cam_t (add cam_t for camera space)
    cam_t: np.ndarray  # (3,) metres: the hand's translation in the full-image camera
    focal_length: float  # pixels (the mean of fx and fy if the caller's intrinsics K had fx != fy)
    global_orient: np.ndarray  # (3,) axis-angle, mirrored back for left hands
    hand_pose: np.ndarray  # (15, 3) axis-angle, mirrored back for left hands
    betas: np.ndarray  # (10,)
    crop_cam: np.ndarray  # (3,) weak-perspective (s, tx, ty) in the crop, tx sign-flipped for left hands
    vertices: np.ndarray | None = None  # (778, 3) metres, same frame as keypoints_3d
    detector_keypoints: np.ndarray | None = None  # (21, 3) x, y pixels + visibility in [0, 1]
    track_id: int | None = None
    extra: dict = field(default_factory=dict)
    camera_center: np.ndarray | None = None  # (2,) principal point, pixels: the image centre unless the caller gave K

    @property
    def side(self) -> str:
        return "right" if self.is_right else "left"
