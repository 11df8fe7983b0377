"""Configuration dataclasses. Defaults equal the released WiLoR model and detector."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

# OpenPose hand order from MANO's 16 joints + 5 fingertips (WiLoR mano_wrapper.py).
MANO_TO_OPENPOSE = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
# smplx vertex_ids["mano"]: thumb, index, middle, ring, pinky tips.
MANO_FINGERTIPS = (744, 320, 443, 554, 671)


def _from_dict(cls, d: dict | None):
    d = dict(d or {})
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    for f in fields(cls):
        if f.name in d and isinstance(d[f.name], list):
            d[f.name] = tuple(d[f.name])
    return cls(**d)


@dataclass
class ViTConfig:
    image_size: tuple[int, int] = (256, 192)  # (H, W) after WiLoR's 32-px side trim of the 256x256 crop
    patch_size: int = 16
    patch_padding: int = 2  # WiLoR's PatchEmbed: 4 + 2 * (ratio // 2 - 1) with ratio 1
    dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_hand_joints: int = 15
    num_betas: int = 10
    norm_eps: float = 1e-6

    @property
    def grid(self) -> tuple[int, int]:
        h, w = self.image_size
        p, pad = self.patch_size, self.patch_padding
        return (h + 2 * pad - p) // p + 1, (w + 2 * pad - p) // p + 1


@dataclass
class RefineNetConfig:
    feat_dim: int = 1280
    upscale: int = 3


@dataclass
class ManoConfig:
    num_vertices: int = 778
    num_faces: int = 1538
    num_joints: int = 16
    num_betas: int = 10
    fingertips: tuple[int, ...] = MANO_FINGERTIPS
    joint_map: tuple[int, ...] = MANO_TO_OPENPOSE

    @property
    def num_pose_basis(self) -> int:
        return 9 * (self.num_joints - 1)


@dataclass
class WiLoRConfig:
    vit: ViTConfig = field(default_factory=ViTConfig)
    refine_net: RefineNetConfig = field(default_factory=RefineNetConfig)
    mano: ManoConfig = field(default_factory=ManoConfig)
    focal_length: float = 5000.0  # the crop camera's focal length (pixels at IMAGE_SIZE)
    image_size: int = 256  # crop side

    @classmethod
    def from_dict(cls, d: dict | None) -> "WiLoRConfig":
        d = dict(d or {})
        return cls(
            vit=_from_dict(ViTConfig, d.pop("vit", None)),
            refine_net=_from_dict(RefineNetConfig, d.pop("refine_net", None)),
            mano=_from_dict(ManoConfig, d.pop("mano", None)),
            **d,
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DetectorConfig:
    """YOLOv8-pose hand detector; defaults are ultralytics' 'm' scale as in WiLoR's detector.pt.

    width/depth/max_channels scale the yolov8-pose.yaml layer list exactly as ultralytics'
    parse_model does (see channels() and repeats()); max_channels None means no cap.
    """

    width: float = 0.75
    depth: float = 0.67
    max_channels: int | None = 768
    num_classes: int = 2  # 0 = left, 1 = right
    kpt_shape: tuple[int, int] = (21, 3)  # (keypoints, 2 for x,y or 3 for x,y,visibility)
    reg_max: int = 16  # DFL bins per box side
    imgsz: int = 640  # the checkpoint's training imgsz (ultralytics predicts at it); convert records the real one
    names: tuple[str, ...] = ("left", "right")

    def channels(self, c: int) -> int:
        """Output channels of a yaml layer with nominal width c (ultralytics make_divisible(., 8))."""
        c = min(c, self.max_channels) if self.max_channels else c
        return int(math.ceil(c * self.width / 8) * 8)

    def repeats(self, n: int) -> int:
        """Bottleneck count of a yaml C2f with nominal repeats n."""
        return max(round(n * self.depth), 1) if n > 1 else n

    @property
    def num_keypoint_channels(self) -> int:
        return self.kpt_shape[0] * self.kpt_shape[1]

    @property
    def num_outputs(self) -> int:
        """Rows of the decoded head output: 4 box + classes + keypoint channels."""
        return 4 + self.num_classes + self.num_keypoint_channels

    @classmethod
    def from_dict(cls, d: dict | None) -> "DetectorConfig":
        return _from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)
