"""ViT-H/16 backbone with WiLoR's 18 MANO query tokens (16 pose, 1 shape, 1 camera).

After wilor/models/backbones/vit.py: the tokens are embeddings of the MANO mean parameters,
prepended to the 192 patch tokens; after the last norm, linear decoders read pose (6D), betas and the
weak-perspective camera from them as offsets to the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ..config import ViTConfig
from .geometry import rot6d_to_rotmat


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)  # names match the WiLoR checkpoint
        self.proj = nn.Linear(dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).transpose(2, 0, 3, 1, 4)
        o = mx.fast.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
        return self.proj(o.transpose(0, 2, 1, 3).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(nn.gelu(self.fc1(x)))  # exact (erf) GELU, as torch.nn.GELU()


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, config.dim, config.patch_size, stride=config.patch_size, padding=config.patch_padding)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.proj(x)  # (B, Hp, Wp, C)
        return x.reshape(x.shape[0], -1, x.shape[-1])


@dataclass
class ViTOutput:
    pose_6d: mx.array  # (B, 16, 6) global orient + 15 joints, 6D
    betas: mx.array  # (B, 10)
    cam: mx.array  # (B, 3) weak-perspective (s, tx, ty) in the crop
    rotmats: mx.array  # (B, 16, 3, 3)
    features: mx.array  # (B, Hp, Wp, C) patch features for RefineNet


class ViT(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        d, nj = config.dim, config.num_hand_joints + 1
        self.patch_embed = PatchEmbed(config)
        hp, wp = config.grid
        # the pretrained ViTPose checkpoint had a class token; WiLoR adds it to every patch position
        self.pos_embed = mx.zeros((1, hp * wp + 1, d))
        # MANO mean parameters (mano_mean_params.npz); stored in the checkpoint as buffers
        self.init_hand_pose = mx.zeros((1, 6 * nj))
        self.init_betas = mx.zeros((1, config.num_betas))
        self.init_cam = mx.zeros((1, 3))
        self.pose_emb = nn.Linear(6, d)
        self.shape_emb = nn.Linear(config.num_betas, d)
        self.cam_emb = nn.Linear(3, d)
        self.blocks = [Block(d, config.num_heads, config.mlp_ratio, config.norm_eps) for _ in range(config.depth)]
        self.last_norm = nn.LayerNorm(d, eps=config.norm_eps)
        self.decpose = nn.Linear(d, 6)
        self.decshape = nn.Linear(d, config.num_betas)
        self.deccam = nn.Linear(d, 3)

    def __call__(self, x: mx.array) -> ViTOutput:
        """x (B, H, W, 3) normalised image, (H, W) = config.image_size."""
        B = x.shape[0]
        nj = self.config.num_hand_joints + 1
        hp, wp = self.config.grid
        x = self.patch_embed(x)
        x = x + (self.pos_embed[:, 1:] + self.pos_embed[:, :1]).astype(x.dtype)
        tokens = mx.concatenate(
            [
                self.pose_emb(self.init_hand_pose.reshape(1, nj, 6)),
                self.shape_emb(self.init_betas)[:, None],
                self.cam_emb(self.init_cam)[:, None],
            ],
            axis=1,
        ).astype(x.dtype)
        x = mx.concatenate([mx.broadcast_to(tokens, (B, nj + 2, tokens.shape[-1])), x], axis=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.last_norm(x)

        pose_6d = self.decpose(x[:, :nj]).reshape(B, nj * 6) + self.init_hand_pose
        betas = self.decshape(x[:, nj]) + self.init_betas
        cam = self.deccam(x[:, nj + 1]) + self.init_cam
        pose_6d = pose_6d.reshape(B, nj, 6)
        return ViTOutput(
            pose_6d=pose_6d,
            betas=betas,
            cam=cam,
            rotmats=rot6d_to_rotmat(pose_6d.astype(mx.float32)),
            features=x[:, nj + 2 :].reshape(B, hp, wp, -1),
        )
