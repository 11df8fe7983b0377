"""Rotation conversions used inside the graph."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from . import kernels

# The forward pass calls these on (B, 16, ...) arrays. They are written with slices and elementwise
# arithmetic only (no reductions, argmax or gathers), so that under mx.compile each becomes one fused
# kernel, instead of dozens of tiny launches.


def _c(x: mx.array, i: int) -> mx.array:
    """Component i of the last axis, kept as a length-1 axis (a view)."""
    return x[..., i : i + 1]


_IOTAS: dict[int, mx.array] = {}


def _join(pieces: list[mx.array]) -> mx.array:
    """n arrays (..., 1) -> (..., n), as one chain of selects against a constant 0..n-1 (fused with the
    arithmetic before it under mx.compile; mx.concatenate would copy every piece in a kernel of its own)."""
    n = len(pieces)
    if n not in _IOTAS:
        _IOTAS[n] = mx.array(np.arange(n, dtype=np.int32))  # data, not an op: a constant of every trace
    iota = _IOTAS[n]
    out = pieces[-1]
    for i in range(n - 2, -1, -1):
        out = mx.where(iota == i, pieces[i], out)
    return out


def _norm3(x, y, z):
    return mx.sqrt(x * x + y * y + z * z)


def rot6d_to_rotmat(x: mx.array) -> mx.array:
    """6D rotation (..., 6) -> rotation matrix (..., 3, 3); one CUDA kernel for float32 where available
    (models/kernels.py), else _rot6d_to_rotmat_ops."""
    return kernels.rot6d_to_rotmat(x, _rot6d_to_rotmat_ops)


def _rot6d_to_rotmat_ops(x: mx.array) -> mx.array:
    """6D rotation (Zhou et al., CVPR 2019) -> rotation matrix. x (..., 6) -> (..., 3, 3).

    The 6 numbers are the first two columns (a1 = x[:3], a2 = x[3:]); Gram-Schmidt gives b1, b2 and
    b3 = b1 x b2, stacked as columns, as in WiLoR's vit.py. Normalisation as torch's F.normalize:
    v / max(|v|, 1e-12).
    """
    eps = 1e-12
    a1x, a1y, a1z, a2x, a2y, a2z = (_c(x, i) for i in range(6))
    n1 = mx.maximum(_norm3(a1x, a1y, a1z), eps)
    b1x, b1y, b1z = a1x / n1, a1y / n1, a1z / n1
    d = b1x * a2x + b1y * a2y + b1z * a2z
    cx, cy, cz = a2x - d * b1x, a2y - d * b1y, a2z - d * b1z
    n2 = mx.maximum(_norm3(cx, cy, cz), eps)
    b2x, b2y, b2z = cx / n2, cy / n2, cz / n2
    b3x, b3y, b3z = b1y * b2z - b1z * b2y, b1z * b2x - b1x * b2z, b1x * b2y - b1y * b2x
    rows = [b1x, b2x, b3x, b1y, b2y, b3y, b1z, b2z, b3z]
    return _join(rows).reshape(*x.shape[:-1], 3, 3)


def _quat_components(R: mx.array):
    """Rotation matrices (..., 3, 3) -> unit quaternion components x, y, z, w, each (..., 1), w >= 0.

    Shepperd's method: build the quaternion from whichever of w, x, y, z is largest, which stays
    accurate for every angle, including 180 degrees where the trace-only formula breaks down.
    """
    flat = R.reshape(*R.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = (_c(flat, i) for i in range(9))
    tr = m00 + m11 + m22
    # 4*w^2, 4*x^2, 4*y^2, 4*z^2 up to the common "+1"; the first largest wins, as argmax
    cands = [tr, m00 - m11 - m22, m11 - m00 - m22, m22 - m00 - m11]
    best, k = cands[0], mx.zeros_like(tr)
    for i, c in enumerate(cands[1:], 1):
        k = mx.where(c > best, i, k)
        best = mx.maximum(best, c)
    quats = [  # (x, y, z, w) for the cases w, x, y, z largest
        (m21 - m12, m02 - m20, m10 - m01, 1 + tr),
        (1 + m00 - m11 - m22, m01 + m10, m02 + m20, m21 - m12),
        (m01 + m10, 1 + m11 - m00 - m22, m12 + m21, m02 - m20),
        (m02 + m20, m12 + m21, 1 + m22 - m00 - m11, m10 - m01),
    ]
    q = list(quats[3])
    for i in (2, 1, 0):
        q = [mx.where(k == i, a, b) for a, b in zip(quats[i], q)]
    n = mx.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    sign = mx.where(q[3] < 0, -1.0, 1.0) / n
    return tuple(c * sign for c in q)


def rotmat_to_axis_angle(R: mx.array) -> mx.array:
    """Rotation matrix (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi]; one CUDA kernel for float32
    where available (models/kernels.py), else _rotmat_to_axis_angle_ops."""
    return kernels.rotmat_to_axis_angle(R, _rotmat_to_axis_angle_ops)


def _rotmat_to_axis_angle_ops(R: mx.array) -> mx.array:
    """Rotation matrix (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi].

    Through the quaternion (as roma.rotmat_to_rotvec): angle = 2 atan2(|v|, w); near zero the
    series angle/sin(angle/2) ~ 2 + angle^2/12 avoids 0/0.
    """
    x, y, z, w = _quat_components(R)
    n = _norm3(x, y, z)
    angle = 2 * mx.arctan2(n, w)
    small = angle < 1e-3
    safe_n = mx.where(small, mx.ones_like(n), n)
    scale = mx.where(small, 2.0 + angle * angle / 12.0, angle / safe_n)
    return _join([x * scale, y * scale, z * scale])


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
