"""WiLoR: ViT-H backbone -> temporary MANO -> RefineNet -> final MANO, on 256x256 hand crops.

After WiLoR (Potamias et al., CVPR 2025) and its inference code WiLoR-mini (wilor_mini/models/wilor.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..config import WiLoRConfig
from ..transfer import from_device, to_device
from . import kernels
from .compiled import CompiledForward, compile_enabled
from .geometry import rotmat_to_axis_angle
from .mano import MANO
from .refinenet import RefineNet
from .vit import ViT

# ImageNet statistics in RGB order (WiLoR model_config.yaml MODEL.IMAGE_MEAN / IMAGE_STD).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

# Output names of the seed project / WiLoR-mini, for to_dict().
_SEED_NAMES = {"keypoints_3d": "pred_keypoints_3d", "vertices": "pred_vertices", "cam": "pred_cam"}


@dataclass
class WiLoROutput:
    keypoints_3d: mx.array  # (B, 21, 3) metres, MANO frame (no translation), OpenPose order
    vertices: mx.array  # (B, 778, 3) metres, MANO frame
    cam: mx.array  # (B, 3) refined weak-perspective camera (s, tx, ty) of the crop
    global_orient: mx.array  # (B, 1, 3) axis-angle
    hand_pose: mx.array  # (B, 15, 3) axis-angle
    betas: mx.array  # (B, 10)
    global_orient_rotmat: mx.array  # (B, 1, 3, 3)
    hand_pose_rotmat: mx.array  # (B, 15, 3, 3)

    def to_dict(self) -> dict[str, mx.array]:
        """The reference's output dict: pred_keypoints_3d, pred_vertices, pred_cam, global_orient, hand_pose, betas, ..."""
        return {_SEED_NAMES.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}

    def __getitem__(self, key: str) -> mx.array:
        return self.to_dict()[key]

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Every field as float32 numpy, by name, in one device -> host copy (mlx_hands.transfer.from_device). On
        CUDA this is faster than np.array per field, which waits once per field and moves each buffer into
        managed memory (1-2 ms at 64 crops, BENCHMARKS.md)."""
        return from_device({f.name: getattr(self, f.name) for f in fields(self)})


def normalize_crops(crops: mx.array, image_size: tuple[int, int], dtype) -> mx.array:
    """Crops (B, 256, 256, 3) with values 0..255 -> the normalised, side-trimmed network input (B, 256, 192, 3).

    Channel order: the trained network sees RGB. WiLoR's own demo converts the BGR crop to RGB in
    ViTDetDataset before normalising, and WiLoR-mini reverses the channels of its BGR crop inside
    forward(); our crops are RGB already, so nothing is flipped here.
    """
    h, w = image_size
    left = (crops.shape[2] - w) // 2
    x = crops[:, :h, left : left + w].astype(mx.float32) / 255.0
    x = (x - mx.array(IMAGE_MEAN)) / mx.array(IMAGE_STD)
    return x.astype(dtype)


class WiLoR(nn.Module):
    """compile: run the forward through mx.compile (see models/compiled.py); None (default) compiles on a
    GPU and not on the CPU. On a GPU, loaded models run uncompiled until their kernels are compiled
    (mlx_hands.kernel_cache)."""

    def __init__(self, config: WiLoRConfig | None = None, *, compile: bool | None = None):
        super().__init__()
        self.config = config = config or WiLoRConfig()
        self.backbone = ViT(config.vit)
        self.refine_net = RefineNet(config.refine_net, config.vit.num_hand_joints + 1, config.vit.num_betas)
        self.mano = MANO(config.mano)
        self.compile = compile
        self._compiled = CompiledForward()
        self.eval()  # BatchNorm uses its running statistics

    @property
    def faces(self) -> np.ndarray:
        """MANO triangles (F, 3), right-hand winding."""
        return self.mano.faces

    @property
    def dtype(self):
        return self.backbone.pos_embed.dtype

    def input_window(self, crops: np.ndarray) -> np.ndarray:
        """The part of host crops (B, 256, 256, 3) that the network reads, as a view: all rows, the middle
        192 columns (WiLoR trims the sides). The model accepts either; sending the window to the GPU
        moves a quarter fewer bytes."""
        h, w = self.config.vit.image_size
        left = (crops.shape[2] - w) // 2
        return crops[:, :h, left : left + w]

    def check_crops(self, crops) -> mx.array:
        """numpy or MLX crops -> the MLX array the network reads, or one ValueError naming the problem.

        numpy crops travel to the device through mlx_hands.transfer (only the columns the network reads);
        float crops must be finite (a NaN would spread through every output).
        """
        s = self.config.image_size
        h, w = self.config.vit.image_size
        shape = tuple(getattr(crops, "shape", ()))
        if not isinstance(crops, (mx.array, np.ndarray)):
            raise ValueError(f"crops must be a numpy or MLX array (B, {s}, {s}, 3), got {type(crops).__name__}")
        if len(shape) != 4 or shape[1:] not in ((s, s, 3), (h, w, 3)):
            raise ValueError(f"crops must have shape (B, {s}, {s}, 3) (NHWC, RGB), or (B, {h}, {w}, 3) for the "
                             f"middle columns only (input_window), got {shape}")
        if shape[0] == 0:
            raise ValueError("crops is an empty batch")
        if isinstance(crops, np.ndarray):
            if crops.dtype not in (np.uint8, np.float32, np.float16):
                raise ValueError(f"crops must be uint8 or float32/float16 (values 0..255), got numpy {crops.dtype}")
            if crops.dtype != np.uint8 and not np.isfinite(crops).all():
                raise ValueError("crops contain NaN or infinite values")
            return to_device(self.input_window(crops))
        if crops.dtype not in (mx.uint8, mx.float32, mx.float16, mx.bfloat16):
            raise ValueError(f"crops must be uint8 or float (values 0..255), got {crops.dtype}")
        if crops.dtype != mx.uint8 and not mx.all(mx.isfinite(crops)).item():
            raise ValueError("crops contain NaN or infinite values")
        return crops

    def __call__(self, crops: mx.array | np.ndarray, focal_length: float | mx.array | None = None) -> WiLoROutput:
        """crops (B, 256, 256, 3): RGB, uint8 or float with values 0..255, numpy or MLX -> WiLoROutput (MLX arrays).
        The network reads the middle 192 columns only; crops of just those, (B, 256, 192, 3), give the same
        output (input_window).

        focal_length: the crop camera's focal length F (pixels of the 256-px crop), a float or (B,)
        array; default config.focal_length (5000). WiLoR-mini's `focal_length` setting: RefineNet
        projects the first-pass mesh with it. A real camera's focal f (pixels of the full W x H image)
        corresponds to F = f * 256 / max(W, H).
        """
        crops = self.check_crops(crops)
        F = self.config.focal_length if focal_length is None else focal_length
        if compile_enabled(self.compile, self.training):
            # Python-level choices the trace bakes in
            key = (self.mano.parents, self.backbone.fuse_add_norm, self.refine_net.deconv.deconv_gemm,
                   kernels.active())
            if self._compiled.ready(key):
                # F enters as an array so that a new focal length does not retrace
                F = mx.array(F, dtype=mx.float32).reshape(-1, 1)
                return WiLoROutput(**self._compiled.get(self.forward_arrays, self, key)(crops, F))
        if isinstance(F, mx.array):
            F = F.astype(mx.float32).reshape(-1, 1)
        return WiLoROutput(**self.forward_arrays(crops, F))

    def forward_arrays(self, crops: mx.array, F) -> dict[str, mx.array]:
        """The forward pass on checked crops: WiLoROutput's fields as a dict (what mx.compile traces)."""
        x = normalize_crops(crops, self.config.vit.image_size, self.dtype)
        vit = self.backbone(x)
        temp = self.mano.posed(vit.betas, vit.rotmats)
        ref = self.refine_net(vit.features, temp.vertices, vit.pose_6d, vit.betas, vit.cam, F)
        out = self.mano.posed(ref.betas, ref.rotmats)
        aa = rotmat_to_axis_angle(ref.rotmats)
        return dict(
            keypoints_3d=out.joints,
            vertices=out.vertices,
            cam=ref.cam.astype(mx.float32),
            global_orient=aa[:, :1],
            hand_pose=aa[:, 1:],
            betas=ref.betas.astype(mx.float32),
            global_orient_rotmat=ref.rotmats[:, :1],
            hand_pose_rotmat=ref.rotmats[:, 1:],
        )
