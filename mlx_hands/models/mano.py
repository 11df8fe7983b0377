"""The MANO hand layer (right hand), fed by rotation matrices, as smplx.MANOLayer with pose2rot=False
plus WiLoR's five fingertip vertices and the OpenPose joint order (WiLoR mano_wrapper.py)."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..config import ManoConfig
from . import kernels
from .lbs import lbs

MANO_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights")


@dataclass
class ManoOutput:
    vertices: mx.array  # (B, 778, 3) metres
    joints: mx.array  # (B, 21, 3) metres, OpenPose hand order


class MANO(nn.Module):
    """Buffers come from the converted MANO file (mlx_hands.convert.mano), not from the model weights.

    They are kept under private names: not parameters, so dtype casts and quantization never touch them
    and MANO always runs in float32.
    """

    def __init__(self, config: ManoConfig):
        super().__init__()
        self.config = config
        V, J, K = config.num_vertices, config.num_joints, config.num_betas
        self._v_template = mx.zeros((V, 3))
        self._shapedirs = mx.zeros((V, 3, K))
        self._posedirs = mx.zeros((config.num_pose_basis, V * 3))
        self._J_regressor = mx.zeros((J, V))
        self._lbs_weights = mx.zeros((V, J))
        self.parents: tuple[int, ...] = (-1,) + (0,) * (J - 1)
        self.faces = np.zeros((config.num_faces, 3), np.int32)
        # output joints in one gather from [16 skeleton joints, V vertices]: joint_map over joints + fingertips
        J = config.num_joints
        self._out_index = mx.array([j if j < J else J + config.fingertips[j - J] for j in config.joint_map])

    def set_data(self, arrays: dict[str, np.ndarray]) -> None:
        """Load canonical MANO arrays (shapes were checked by convert.mano.load_mano)."""
        for k in MANO_KEYS:
            expected = getattr(self, '_' + k).shape
            if tuple(arrays[k].shape) != tuple(expected):
                raise ValueError(f"MANO array {k!r} has shape {arrays[k].shape}, model expects {expected}")
            setattr(self, '_' + k, mx.array(np.asarray(arrays[k], np.float32)))
        parents = tuple(int(p) for p in arrays["parents"])
        if parents[0] != -1 or any(not 0 <= p < j for j, p in enumerate(parents) if j):
            raise ValueError(f"MANO parents must be a tree in topological order with parents[0] = -1, got {parents}")
        self.parents = parents
        self.faces = np.asarray(arrays["faces"], np.int32)

    def __call__(self, betas: mx.array, global_orient: mx.array, hand_pose: mx.array) -> ManoOutput:
        """betas (B, 10), global_orient (B, 1, 3, 3), hand_pose (B, 15, 3, 3) -> ManoOutput."""
        return self.posed(betas, mx.concatenate([global_orient, hand_pose], axis=1))

    def posed(self, betas: mx.array, rot_mats: mx.array) -> ManoOutput:
        """betas (B, 10), rot_mats (B, 16, 3, 3): global orientation then the 15 hand joints -> ManoOutput."""
        rot_mats = rot_mats.astype(mx.float32)
        betas = betas.astype(mx.float32)

        def ops():
            verts, joints = lbs(betas, rot_mats, self._v_template, self._shapedirs, self._posedirs,
                                self._J_regressor, self.parents, self._lbs_weights)
            return verts, mx.take(mx.concatenate([joints, verts], axis=1), self._out_index, axis=1)

        verts, joints = kernels.mano(betas, rot_mats, self._v_template, self._shapedirs, self._posedirs,
                                     self._J_regressor, self._lbs_weights, self.parents, self._out_index, ops)
        return ManoOutput(vertices=verts, joints=joints)
