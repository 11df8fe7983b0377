"""Linear blend skinning as pure functions (after smplx's lbs.py, pose given as rotation matrices).

Written for few GPU launches: the 3x3 products of the kinematic chain are broadcast multiply-adds and
joints are addressed with slices rather than index lists, so that under mx.compile the chain fuses into
a handful of kernels; the matrix products that remain (blend shapes, joint regression, skinning) are
one GEMM each.
"""

from __future__ import annotations

import mlx.core as mx


def _mm3(a: mx.array, b: mx.array) -> mx.array:
    """a (..., 3, 3) @ b (..., 3, n) as three broadcast multiply-adds (fusable; no GEMM launch for 3x3s)."""
    return a[..., :, 0:1] * b[..., 0:1, :] + a[..., :, 1:2] * b[..., 1:2, :] + a[..., :, 2:3] * b[..., 2:3, :]


def _levels(parents: tuple[int, ...]) -> list[list[int]]:
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return [[j for j in range(len(parents)) if depth[j] == d] for d in range(max(depth) + 1)]


def chain_layout(parents: tuple[int, ...]) -> tuple[int, int] | None:
    """(K, L) when joints 1..J-1 are K chains of L consecutive joints, each chain hanging from the root
    (MANO: 5 fingers x 3 joints); None for other trees."""
    n = len(parents) - 1
    for L in range(1, n + 1):
        if n % L:
            continue
        if all(parents[1 + i] == (0 if i % L == 0 else i) for i in range(n)):
            return n // L, L
    return None


def _world_chains(rot_mats: mx.array, rel: mx.array, K: int, L: int):
    """World rotations (B, J, 3, 3) and positions (B, J, 3) for the chain layout, joint order kept."""
    B = rot_mats.shape[0]
    R0, t0 = rot_mats[:, :1], rel[:, :1, :, None]  # (B, 1, 3, 3), (B, 1, 3, 1)
    r = rot_mats[:, 1:].reshape(B, K, L, 3, 3)
    d = rel[:, 1:].reshape(B, K, L, 3, 1)
    Rs, ts = [], []
    Rp, tp = R0, t0
    for level in range(L):
        tp = tp + _mm3(Rp, d[:, :, level])
        Rp = _mm3(Rp, r[:, :, level])
        Rs.append(Rp)
        ts.append(tp)
    R = mx.concatenate([R0, mx.stack(Rs, axis=2).reshape(B, K * L, 3, 3)], axis=1)
    t = mx.concatenate([t0, mx.stack(ts, axis=2).reshape(B, K * L, 3, 1)], axis=1)[..., 0]
    return R, t


def _world_levels(rot_mats: mx.array, rel: mx.array, parents: tuple[int, ...]):
    """World rotations and positions for any tree in topological order, one depth level at a time."""
    J = rot_mats.shape[1]
    R, t = rot_mats[:, :1], rel[:, :1, :, None]
    order = [0]
    for level in _levels(parents)[1:]:
        p = mx.array([order.index(parents[j]) for j in level])
        lv = mx.array(level)
        Rp = mx.take(R, p, axis=1)
        t = mx.concatenate([t, mx.take(t, p, axis=1) + _mm3(Rp, mx.take(rel, lv, axis=1)[..., None])], axis=1)
        R = mx.concatenate([R, _mm3(Rp, mx.take(rot_mats, lv, axis=1))], axis=1)
        order += level
    if order != list(range(J)):
        inv = mx.array([order.index(j) for j in range(J)])
        R, t = mx.take(R, inv, axis=1), mx.take(t, inv, axis=1)
    return R, t[..., 0]


def _world(rot_mats: mx.array, joints: mx.array, parents: tuple[int, ...]):
    """Local rotations (B, J, 3, 3) and rest joints (B, J, 3) -> world rotations and posed joints."""
    parents = tuple(int(p) for p in parents)
    chains = chain_layout(parents)
    if chains is not None:
        K, L = chains
        B = joints.shape[0]
        jc = joints[:, 1:].reshape(B, K, L, 3)
        first = jc[:, :, :1] - joints[:, None, :1]  # chain roots relative to the root joint
        rel = mx.concatenate([joints[:, :1], mx.concatenate([first, jc[:, :, 1:] - jc[:, :, :-1]], axis=2)
                              .reshape(B, K * L, 3)], axis=1)
        return _world_chains(rot_mats, rel, K, L)
    rel = mx.concatenate([joints[:, :1], joints[:, 1:] - mx.take(joints, mx.array(parents[1:]), axis=1)], axis=1)
    return _world_levels(rot_mats, rel, parents)


def rigid_transform(rot_mats: mx.array, joints: mx.array, parents: tuple[int, ...]):
    """Walk the kinematic chain.

    rot_mats (B, J, 3, 3) local rotations, joints (B, J, 3) rest joints, parents[j] < j with parents[0] = -1.
    Returns posed joints (B, J, 3) and the skinning transforms (B, J, 4, 4) relative to the rest pose.
    """
    B, J = joints.shape[:2]
    R, posed = _world(rot_mats, joints, parents)
    # transform that maps a rest-pose point x to R x + (posed - R joint_rest)
    trans = posed[..., None] - _mm3(R, joints[..., None])
    top = mx.concatenate([R, trans], axis=-1)  # (B, J, 3, 4)
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
    J = rot_mats.shape[1]
    # shape blend as one GEMM with the template as its bias
    v_shaped = mx.addmm(v_template.reshape(-1), betas, shapedirs.reshape(V * 3, -1).T)  # (B, 3V)
    joints = J_regressor @ v_shaped.reshape(B, V, 3)  # (B, J, 3)
    pose_feature = (rot_mats[:, 1:] - mx.eye(3, dtype=rot_mats.dtype)).reshape(B, -1)
    v_posed = mx.addmm(v_shaped, pose_feature, posedirs).reshape(B, V, 3, 1)
    R, posed_joints = _world(rot_mats, joints, parents)
    trans = posed_joints[..., None] - _mm3(R, joints[..., None])  # (B, J, 3, 1)
    A = mx.concatenate([R, trans], axis=-1).reshape(B, J, 12)  # top 3 rows of the 4x4 transforms
    T = (lbs_weights @ A).reshape(B, V, 3, 4)
    verts = _mm3(T[..., :3], v_posed) + T[..., 3:]
    return verts[..., 0], posed_joints
