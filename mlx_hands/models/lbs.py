"""Linear blend skinning as pure functions (after smplx's lbs.py, pose given as rotation matrices)."""

from __future__ import annotations

import mlx.core as mx


def blend_shapes(betas: mx.array, shapedirs: mx.array) -> mx.array:
    """betas (B, K), shapedirs (V, 3, K) -> per-vertex offsets (B, V, 3)."""
    V = shapedirs.shape[0]
    return (betas @ shapedirs.reshape(V * 3, -1).T).reshape(betas.shape[0], V, 3)


def _levels(parents: tuple[int, ...]) -> list[list[int]]:
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return [[j for j in range(len(parents)) if depth[j] == d] for d in range(max(depth) + 1)]


def rigid_transform(rot_mats: mx.array, joints: mx.array, parents: tuple[int, ...]):
    """Walk the kinematic chain.

    rot_mats (B, J, 3, 3) local rotations, joints (B, J, 3) rest joints, parents[j] < j with parents[0] = -1.
    Returns posed joints (B, J, 3) and the skinning transforms (B, J, 4, 4) relative to the rest pose.
    """
    B, J = joints.shape[:2]
    parents = tuple(int(p) for p in parents)
    rel = mx.concatenate([joints[:, :1], joints[:, 1:] - joints[:, list(parents[1:])]], axis=1)
    # world rotation and position of every joint, one depth level of the tree at a time
    R = rot_mats[:, :1]
    t = rel[:, :1]
    order = [0]
    for level in _levels(parents)[1:]:
        p = [order.index(parents[j]) for j in level]
        Rp = R[:, p]
        R = mx.concatenate([R, Rp @ rot_mats[:, level]], axis=1)
        t = mx.concatenate([t, t[:, p] + (Rp @ rel[:, level, :, None])[..., 0]], axis=1)
        order += level
    inv = [order.index(j) for j in range(J)]
    R, posed = R[:, inv], t[:, inv]  # (B, J, 3, 3), (B, J, 3)
    # transform that maps a rest-pose point x to R x + (posed - R joint_rest)
    trans = posed - (R @ joints[..., None])[..., 0]
    top = mx.concatenate([R, trans[..., None]], axis=-1)  # (B, J, 3, 4)
    bottom = mx.broadcast_to(mx.array([0, 0, 0, 1], dtype=top.dtype), (B, J, 1, 4))
    return posed, mx.concatenate([top, bottom], axis=-2)


def lbs(
    betas: mx.array,
    rot_mats: mx.array,
    v_template: mx.array,
    shapedirs: mx.array,
    posedirs: mx.array,
    J_regressor: mx.array,
    parents: tuple[int, ...],
    lbs_weights: mx.array,
):
    """Linear blend skinning with pose blend shapes.

    betas (B, K), rot_mats (B, J, 3, 3), v_template (V, 3), shapedirs (V, 3, K), posedirs (9 (J-1), 3 V),
    J_regressor (J, V), lbs_weights (V, J) -> vertices (B, V, 3), joints (B, J, 3); metres.
    """
    B = betas.shape[0]
    V = v_template.shape[0]
    v_shaped = v_template + blend_shapes(betas, shapedirs)
    joints = J_regressor @ v_shaped  # (B, J, 3)
    pose_feature = (rot_mats[:, 1:] - mx.eye(3, dtype=rot_mats.dtype)).reshape(B, -1)
    v_posed = v_shaped + (pose_feature @ posedirs).reshape(B, V, 3)
    posed_joints, A = rigid_transform(rot_mats, joints, parents)
    T = (lbs_weights @ A.reshape(B, -1, 16)).reshape(B, V, 4, 4)
    verts = (T[..., :3, :3] @ v_posed[..., None])[..., 0] + T[..., :3, 3]
    return verts, posed_joints
