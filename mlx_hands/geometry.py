"""Camera and mesh helpers on numpy arrays, shared by post-processing, rendering and export.

Camera axes are OpenCV's: x right, y down, z forward; points in metres, pixels for images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Full-image pinhole camera in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def focal(self) -> float:
        return 0.5 * (self.fx + self.fy)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def project(points: np.ndarray, camera: Camera) -> np.ndarray:
    """Pinhole projection of camera-space points (..., 3), metres -> pixels (..., 2)."""
    p = np.asarray(points, dtype=np.float64)
    z = p[..., 2]
    return np.stack([camera.fx * p[..., 0] / z + camera.cx, camera.fy * p[..., 1] / z + camera.cy], axis=-1)


def oriented_faces(faces: np.ndarray, is_right: bool) -> np.ndarray:
    """MANO's right-hand faces (F, 3) wound for this side: left-hand meshes are mirrored (x -> -x), so their
    winding is reversed to keep the normals pointing outwards (WiLoR's renderer, `faces_left`)."""
    faces = np.asarray(faces)
    return faces if is_right else faces[:, [0, 2, 1]]
