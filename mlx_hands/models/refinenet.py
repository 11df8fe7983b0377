"""RefineNet: a deconvolution pyramid over the ViT features, sampled at the projected vertices of the
first MANO pass, max-pooled over vertices and decoded into offsets of pose, betas and camera.
After wilor/models/heads/refinement_net.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ..config import RefineNetConfig
from .geometry import rot6d_to_rotmat
from .kernels import sample_max


class ReLU(nn.Module):
    """max(x, 0) as a plain op: nn.ReLU is an mx.compile'd function, which on CUDA JIT-compiles a kernel even in an
    eager forward (seconds of a cold start)."""

    def __call__(self, x: mx.array) -> mx.array:
        return mx.maximum(x, 0)


def _deconv_stack(dims: list[int]) -> list[nn.Module]:
    # Sequential layout of the checkpoint: ConvTranspose2d (no bias), BatchNorm2d, ReLU per step
    layers: list[nn.Module] = []
    for i, o in zip(dims[:-1], dims[1:]):
        layers += [nn.ConvTranspose2d(i, o, 4, stride=2, padding=1, bias=False), nn.BatchNorm(o), ReLU()]
    return layers


# ConvTranspose2d(k=4, stride=2, padding=1): output row 2m + r takes kernel rows (ky) from input rows
# m + offset - 1, here as (offset into the input padded by one, ky) for each parity r; columns alike.
_TAPS = {0: ((1, 1), (0, 3)), 1: ((1, 2), (2, 0))}


def conv_transpose_up2(x: mx.array, weight: mx.array) -> mx.array:
    """ConvTranspose2d(kernel 4, stride 2, padding 1, no bias) as one GEMM plus a 2x2 interleave of
    shifted sums: x (B, H, W, Ci), weight (Co, 4, 4, Ci) (MLX layout) -> (B, 2H, 2W, Co).

    Same result as mx.conv_transpose2d; much faster where MLX's transposed convolution is a direct loop
    (the CPU), since the GEMM goes to BLAS.
    """
    B, H, W, Ci = x.shape
    Co = weight.shape[0]
    xp = mx.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # the weight as it lies, (Co * 16, Ci), transposed inside the GEMM: reordering it to (Ci, 16 * Co) first
    # was a 13 MB strided copy per call, costing more than the product itself on the CPU
    y = (xp.reshape(-1, Ci) @ weight.reshape(Co * 16, Ci).T).reshape(B, H + 2, W + 2, Co, 4, 4)
    rows = []
    for ry in (0, 1):
        cols = []
        for rx in (0, 1):
            acc = None
            for oy, ky in _TAPS[ry]:
                for ox, kx in _TAPS[rx]:
                    t = y[:, oy : oy + H, ox : ox + W, :, ky, kx]
                    acc = t if acc is None else acc + t
            cols.append(acc)
        rows.append(mx.stack(cols, axis=3))  # (B, H, W, 2, Co)
    return mx.stack(rows, axis=2).reshape(B, 2 * H, 2 * W, Co)


class DeConvNet(nn.Module):
    def __init__(self, feat_dim: int, upscale: int):
        super().__init__()
        self.first_conv = [nn.Conv2d(feat_dim, feat_dim // 2, 1)]
        steps = [[feat_dim // 2, feat_dim // 4], [feat_dim // 2, feat_dim // 4, feat_dim // 8],
                 [feat_dim // 2, feat_dim // 4, feat_dim // 8, feat_dim // 8]]
        self.deconv = [_deconv_stack(steps[i]) for i in range(int(math.log2(upscale)) + 1)]
        # transposed convolutions as GEMMs (conv_transpose_up2); None: on the CPU only, where it is ~50x
        # faster, while cuDNN's kernel serves the GPU
        self.deconv_gemm: bool | None = None

    def __call__(self, x: mx.array) -> list[mx.array]:
        """x (B, h, w, C) -> feature maps from the highest resolution to the lowest."""
        gemm = self.deconv_gemm
        if gemm is None:
            gemm = mx.default_device().type == mx.DeviceType.cpu
        x = self.first_conv[0](x)
        feats = [x]
        for layers in self.deconv:
            y = x
            for layer in layers:
                if gemm and isinstance(layer, nn.ConvTranspose2d) and _is_up2(layer):
                    y = conv_transpose_up2(y, layer.weight)
                else:
                    y = layer(y)
            feats.append(y)
        return feats[::-1]


def _is_up2(layer: nn.ConvTranspose2d) -> bool:
    return (tuple(layer.weight.shape[1:3]) == (4, 4) and tuple(layer.stride) == (2, 2)
            and tuple(layer.padding) == (1, 1) and "bias" not in layer)


def sample_points(feat: mx.array, uv: mx.array) -> mx.array:
    """Bilinear sampling with zero padding at pixel coordinates.

    feat (B, H, W, C), uv (B, N, 2) in pixels (x right, y down; pixel centres at integers) -> (B, N, C).
    Equals torch grid_sample(align_corners=True, padding_mode="zeros") at grid = uv / (size - 1) * 2 - 1.
    Coordinates and indices are computed in float32 whatever feat's dtype; the four corners of every
    point are fetched by one row gather from the flattened map.
    """
    B, H, W, C = feat.shape
    N = uv.shape[1]
    uv = uv.astype(mx.float32)
    u, v = uv[..., 0:1], uv[..., 1:2]  # (B, N, 1)
    u0, v0 = mx.floor(u), mx.floor(v)
    fu, fv = u - u0, v - v0
    dx, dy = mx.array([0.0, 1.0, 0.0, 1.0]), mx.array([0.0, 0.0, 1.0, 1.0])  # corners (0,0) (1,0) (0,1) (1,1)
    x, y = u0 + dx, v0 + dy  # (B, N, 4)
    w = mx.where(dx == 0, 1 - fu, fu) * mx.where(dy == 0, 1 - fv, fv)
    valid = (x >= 0) & (x <= W - 1) & (y >= 0) & (y <= H - 1)
    w = mx.where(valid, w, 0.0).astype(feat.dtype)[..., None]  # (B, N, 4, 1)
    # invalid corners (outside the map, or NaN coordinates: every comparison is false) read element 0 with weight
    # 0; a NaN cast to an integer would index anywhere
    idx = (mx.where(valid, y, 0.0) * W + mx.where(valid, x, 0.0)).astype(mx.int32)
    idx = idx + (mx.arange(B, dtype=mx.int32) * (H * W))[:, None, None]
    g = mx.take(feat.reshape(B * H * W, C), idx.reshape(-1), axis=0).reshape(B, N, 4, C)
    return g[:, :, 0] * w[:, :, 0] + g[:, :, 1] * w[:, :, 1] + g[:, :, 2] * w[:, :, 2] + g[:, :, 3] * w[:, :, 3]


def _sample_max_ops(feat: mx.array, u: mx.array, v: mx.array) -> mx.array:
    """max over points of sample_points(feat, (u, v)): (B, H, W, C), (B, N), (B, N) -> (B, C)."""
    return sample_points(feat, mx.stack([u, v], axis=-1)).max(axis=1)


@dataclass
class RefineOutput:
    pose_6d: mx.array  # (B, 16, 6)
    betas: mx.array  # (B, 10)
    cam: mx.array  # (B, 3)
    rotmats: mx.array  # (B, 16, 3, 3)


class RefineNet(nn.Module):
    def __init__(self, config: RefineNetConfig, num_joints: int = 16, num_betas: int = 10):
        super().__init__()
        d = config.feat_dim
        self.deconv = DeConvNet(d, config.upscale)
        out_dim = d // 8 + d // 4 + d // 2
        self.dec_pose = nn.Linear(out_dim, 6 * num_joints)
        self.dec_cam = nn.Linear(out_dim, 3)
        self.dec_shape = nn.Linear(out_dim, num_betas)

    def __call__(self, features, vertices, pose_6d, betas, cam, focal_length) -> RefineOutput:
        """features (B, h, w, C); vertices (B, V, 3) of the first MANO pass; pose_6d (B, 16, 6), betas, cam from
        the ViT; focal_length: float or (B, 1) array, pixels of the crop."""
        feats = self.deconv(features)
        s, tx, ty = cam[:, 0:1], cam[:, 1:2], cam[:, 2:3]
        X, Y, Z = vertices[..., 0], vertices[..., 1], vertices[..., 2]
        pooled = []
        for f in feats:
            # WiLoR projects with focal F / size and no principal point, the size being the map's height
            size = f.shape[1]
            tz = 2 * focal_length / (size * s + 1e-9)
            z = Z + tz
            fs = focal_length / size
            pooled.append(sample_max(f, fs * (X + tx) / z, fs * (Y + ty) / z, _sample_max_ops))
        h = mx.concatenate(pooled, axis=-1)
        pose_6d = pose_6d + self.dec_pose(h).reshape(pose_6d.shape)
        betas = betas + self.dec_shape(h)
        cam = cam + self.dec_cam(h)
        return RefineOutput(pose_6d=pose_6d, betas=betas, cam=cam, rotmats=rot6d_to_rotmat(pose_6d.astype(mx.float32)))
