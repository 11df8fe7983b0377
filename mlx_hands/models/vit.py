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
from . import cpu_math, kernels
from .geometry import rot6d_to_rotmat
from .kernels import add_layer_norm


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)  # names match the WiLoR checkpoint
        self.proj = nn.Linear(dim, dim)
        # cpu_math.attention (two matrix products around fast exponentials); None: on the CPU only
        self.cpu_math: bool | None = None

    def __call__(self, x: mx.array) -> mx.array:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, -1)
        # q, k, v as strided views into the one qkv buffer: slices, not qkv[i] (an integer index on the
        # first axis is a gather, i.e. three copies per block). The fused attention reads the views, and
        # its output comes back laid out as (B, N, heads, D), so the reshape below is free too.
        q, k, v = (qkv[:, :, i : i + 1].squeeze(2).transpose(0, 2, 1, 3) for i in range(3))
        if cpu_math.use(self.cpu_math):
            o = cpu_math.attention(q, k, v, self.scale)
        else:
            o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(o.transpose(0, 2, 1, 3).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.cpu_math: bool | None = None  # GELU from models/cpu_math.py; None: on the CPU only

    def __call__(self, x: mx.array) -> mx.array:
        h = self.fc1(x)
        h = cpu_math.gelu(h) if cpu_math.use(self.cpu_math) else kernels.gelu(h)  # exact (erf), as torch.nn.GELU()
        return self.fc2(h)


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
        """x (B, H, W, 3) -> patch tokens (B, Hp * Wp, C)."""
        w = self.proj.weight  # (C, k, k, 3)
        k, p = w.shape[1], self.proj.padding[0]
        if self.proj.stride[0] != k:
            x = self.proj(x)
            return x.reshape(x.shape[0], -1, x.shape[-1])
        # stride = kernel: the convolution is one matrix product over non-overlapping patches (a GEMM
        # instead of a general convolution kernel)
        B, H, W, c = x.shape
        hp, wp = (H + 2 * p - k) // k + 1, (W + 2 * p - k) // k + 1
        x = mx.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))[:, : hp * k, : wp * k]
        x = x.reshape(B, hp, k, wp, k, c).transpose(0, 1, 3, 2, 4, 5).reshape(B, hp * wp, k * k * c)
        return mx.addmm(self.proj.bias, x, w.reshape(w.shape[0], -1).T)


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
        # each residual add and the LayerNorm after it as one kernel (models/kernels.py); None: on CUDA only
        self.fuse_add_norm: bool | None = None

    def blocks_forward(self, x: mx.array) -> mx.array:
        """The transformer blocks and the last norm. Same arithmetic as Block.__call__ in sequence, arranged
        so that every residual add meets the LayerNorm that reads it (the next block's norm1, the last norm)."""
        if not self.blocks:
            return self.last_norm(x)
        h = self.blocks[0].norm1(x)
        for i, blk in enumerate(self.blocks):
            n2 = blk.norm2
            x, h = add_layer_norm(x, blk.attn(h), n2.weight, n2.bias, n2.eps, self.fuse_add_norm)
            nxt = self.blocks[i + 1].norm1 if i + 1 < len(self.blocks) else self.last_norm
            x, h = add_layer_norm(x, blk.mlp(h), nxt.weight, nxt.bias, nxt.eps, self.fuse_add_norm)
        return h

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
        x = self.blocks_forward(x)

        pose_6d = self.decpose(x[:, :nj]).reshape(B, nj * 6) + self.init_hand_pose
        betas = self.decshape(x[:, nj : nj + 1]).reshape(B, -1) + self.init_betas
        cam = self.deccam(x[:, nj + 1 : nj + 2]).reshape(B, -1) + self.init_cam
        pose_6d = pose_6d.reshape(B, nj, 6)
        return ViTOutput(
            pose_6d=pose_6d,
            betas=betas,
            cam=cam,
            rotmats=rot6d_to_rotmat(pose_6d.astype(mx.float32)),
            features=x[:, nj + 2 :].reshape(B, hp, wp, -1),
        )
