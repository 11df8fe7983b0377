"""Configuration dataclasses. Defaults equal the released WiLoR model and detector."""

from __future__ import annotations

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
    """YOLOv8-pose hand detector (ultralytics 'm' scale for WiLoR's detector.pt)."""

    width: float = 0.75
    depth: float = 0.67
    max_channels: int = 768
    num_classes: int = 2  # 0 = left, 1 = right
    kpt_shape: tuple[int, int] = (21, 3)
    reg_max: int = 16
    imgsz: int = 640  # the checkpoint's training imgsz; convert() records the real one

    @classmethod
    def from_dict(cls, d: dict | None) -> "DetectorConfig":
        return _from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)
