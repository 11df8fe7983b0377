"""Rotation conversions used inside the graph."""

from __future__ import annotations

import mlx.core as mx


def _normalize(v: mx.array, eps: float = 1e-12) -> mx.array:
    # torch.nn.functional.normalize: v / max(|v|, eps)
    return v / mx.maximum(mx.linalg.norm(v, axis=-1, keepdims=True), eps)


def rot6d_to_rotmat(x: mx.array) -> mx.array:
    """6D rotation (Zhou et al., CVPR 2019) -> rotation matrix. x (..., 6) -> (..., 3, 3).

    The 6 numbers are the first two columns (a1 = x[:3], a2 = x[3:]); Gram-Schmidt gives b1, b2 and
    b3 = b1 x b2, stacked as columns, as in WiLoR's vit.py.
    """
    a1, a2 = x[..., :3], x[..., 3:6]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - mx.sum(b1 * a2, axis=-1, keepdims=True) * b1)
    b3 = mx.linalg.cross(b1, b2)
    return mx.stack([b1, b2, b3], axis=-1)


def rotmat_to_quat(R: mx.array) -> mx.array:
    """Rotation matrix (..., 3, 3) -> unit quaternion (..., 4) as (x, y, z, w), w >= 0.

    Shepperd's method: build the quaternion from whichever of w, x, y, z is largest, which stays
    accurate for every angle, including 180 degrees where the trace-only formula breaks down.
    """
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    tr = m00 + m11 + m22
    # 4*w^2, 4*x^2, 4*y^2, 4*z^2 up to the common "+1"
    cands = mx.stack([tr, m00 - m11 - m22, m11 - m00 - m22, m22 - m00 - m11], axis=-1)
    k = mx.argmax(cands, axis=-1)
    qw = mx.stack([m21 - m12, m02 - m20, m10 - m01, 1 + tr], axis=-1)  # case w largest
    qx = mx.stack([1 + m00 - m11 - m22, m01 + m10, m02 + m20, m21 - m12], axis=-1)
    qy = mx.stack([m01 + m10, 1 + m11 - m00 - m22, m12 + m21, m02 - m20], axis=-1)
    qz = mx.stack([m02 + m20, m12 + m21, 1 + m22 - m00 - m11, m10 - m01], axis=-1)
    k = k[..., None]
    q = mx.where(k == 0, qw, mx.where(k == 1, qx, mx.where(k == 2, qy, qz)))
    q = q / mx.linalg.norm(q, axis=-1, keepdims=True)
    return mx.where(q[..., 3:4] < 0, -q, q)


def rotmat_to_axis_angle(R: mx.array) -> mx.array:
    """Rotation matrix (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi].

    Through the quaternion (as roma.rotmat_to_rotvec): angle = 2 atan2(|v|, w); near zero the
    series angle/sin(angle/2) ~ 2 + angle^2/12 avoids 0/0.
    """
    q = rotmat_to_quat(R)
    v, w = q[..., :3], q[..., 3:4]
    n = mx.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2 * mx.arctan2(n, w)
    small = angle < 1e-3
    safe_n = mx.where(small, mx.ones_like(n), n)
    scale = mx.where(small, 2.0 + angle * angle / 12.0, angle / safe_n)
    return v * scale


def axis_angle_to_rotmat(aa: mx.array) -> mx.array:
    """Rodrigues: axis-angle (..., 3) -> rotation matrix (..., 3, 3)."""
    angle = mx.linalg.norm(aa, axis=-1, keepdims=True)
    small = angle < 1e-8
    axis = aa / mx.where(small, mx.ones_like(angle), angle)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    c, s = mx.cos(angle[..., 0]), mx.sin(angle[..., 0])
    C = 1 - c
    zero = mx.zeros_like(x)
    K = mx.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*aa.shape[:-1], 3, 3)
    eye = mx.eye(3, dtype=aa.dtype)
    return eye + s[..., None, None] * K + C[..., None, None] * (K @ K)
