"""Configuration: the constants every layer shares and the networks' config dataclasses.

Defaults equal the released WiLoR model, its detector and WiLoR-mini's demo settings. `from_dict` checks
every field (name, type, value) so that a damaged config.json fails at load with one line naming the field.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

# OpenPose hand order from MANO's 16 joints + 5 fingertips (WiLoR mano_wrapper.py).
MANO_TO_OPENPOSE = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
# smplx vertex_ids["mano"]: thumb, index, middle, ring, pinky tips.
MANO_FINGERTIPS = (744, 320, 443, 554, 671)

# Float dtypes a model can be stored and run in.
DTYPES = ("float32", "float16", "bfloat16")

# WiLoR's crop and camera (wilor_mini/utils, model_config.yaml).
CROP_SIZE = 256  # side of the square hand crop, pixels
RESCALE_FACTOR = 2.5  # crop side / largest box side (WiLoR-mini; the original demo uses 2.0)
FOCAL_LENGTH = 5000.0  # the crop camera's focal length, pixels at CROP_SIZE

# Detector settings of WiLoR's demo (conf) and ultralytics' defaults (iou, max_det).
CONF = 0.3
IOU = 0.7
MAX_DET = 300

# The canonical converted folder (mlx_hands.weights).
FORMAT_VERSION = 1
CONFIG_FILE, MODEL_FILE, MANO_FILE = "config.json", "model.safetensors", "mano.safetensors"
# The original files, as in the Hub repository warmshao/WiLoR-mini (folder pretrained_models/).
ORIGINAL_FILES = {
    "checkpoint": "wilor_final.ckpt",
    "mean_params": "mano_mean_params.npz",
    "mano": "MANO_RIGHT.pkl",
    "detector": "detector.pt",
}
# The predecessor project's single-file weights (lyonsno/wilor-mlx), preferred first.
SEED_FILES = ("wilor-mlx.safetensors", "wilor-mlx-int4.safetensors")


def _check_value(cls, name: str, kind, value, where: str):
    """value as the field's declared type (int, float, bool, str, tuple[int, ...]) or ValueError."""
    def bad(expected):
        return ValueError(f"{where}: {name} must be {expected}, got {value!r}")

    if kind in ("int", "int | None"):
        if value is None and kind.endswith("None"):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind.startswith("tuple["):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        item = "str" if "str" in kind else "int"
        return tuple(_check_value(cls, f"{name}[{i}]", item, v, where) for i, v in enumerate(value))
    raise TypeError(f"{cls.__name__}.{name}: unsupported field type {kind}")  # a programming error


def _from_dict(cls, d, where: str):
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be an object (a JSON dict), got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    hints = {k: v if isinstance(v, str) else getattr(v, "__name__", str(v))
             for k, v in cls.__annotations__.items()}
    kwargs = {k: _check_value(cls, k, hints[k], v, where) for k, v in d.items()}
    obj = cls(**kwargs)
    obj.validate(where)
    return obj


def _positive(where: str, **values) -> None:
    for name, v in values.items():
        if not v > 0:
            raise ValueError(f"{where}: {name} must be positive, got {v!r}")


@dataclass
class ViTConfig:
    image_size: tuple[int, ...] = (256, 192)  # (H, W) after WiLoR's 32-px side trim of the 256x256 crop
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

    def validate(self, where: str = "vit") -> None:
        if len(self.image_size) != 2:
            raise ValueError(f"{where}: image_size must be [H, W], got {list(self.image_size)}")
        _positive(where, image_height=self.image_size[0], image_width=self.image_size[1], patch_size=self.patch_size,
                  dim=self.dim, depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
                  num_hand_joints=self.num_hand_joints, num_betas=self.num_betas, norm_eps=self.norm_eps)
        if self.patch_padding < 0:
            raise ValueError(f"{where}: patch_padding must be >= 0, got {self.patch_padding}")
        if self.dim % self.num_heads:
            raise ValueError(f"{where}: dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if (self.dim * self.mlp_ratio) % 1:
            raise ValueError(f"{where}: dim * mlp_ratio must be a whole number, got {self.dim * self.mlp_ratio}")
        if min(self.grid) < 1:
            raise ValueError(f"{where}: image_size {list(self.image_size)} is smaller than one patch")


@dataclass
class RefineNetConfig:
    feat_dim: int = 1280
    upscale: int = 3

    def validate(self, where: str = "refine_net") -> None:
        _positive(where, feat_dim=self.feat_dim, upscale=self.upscale)
        if self.feat_dim % 8:
            raise ValueError(f"{where}: feat_dim must be a multiple of 8, got {self.feat_dim}")


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

    def validate(self, where: str = "mano") -> None:
        _positive(where, num_vertices=self.num_vertices, num_faces=self.num_faces, num_joints=self.num_joints,
                  num_betas=self.num_betas)
        if any(not 0 <= v < self.num_vertices for v in self.fingertips):
            raise ValueError(f"{where}: fingertips must be vertex indices below {self.num_vertices}")
        if sorted(self.joint_map) != list(range(self.num_joints + len(self.fingertips))):
            raise ValueError(f"{where}: joint_map must order the {self.num_joints} joints and "
                             f"{len(self.fingertips)} tips, got {list(self.joint_map)}")


@dataclass
class WiLoRConfig:
    vit: ViTConfig = field(default_factory=ViTConfig)
    refine_net: RefineNetConfig = field(default_factory=RefineNetConfig)
    mano: ManoConfig = field(default_factory=ManoConfig)
    focal_length: float = FOCAL_LENGTH  # the crop camera's focal length (pixels at image_size)
    image_size: int = CROP_SIZE  # crop side

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "wilor") -> "WiLoRConfig":
        d = dict(d or {}) if isinstance(d, dict) or d is None else d
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be an object (a JSON dict), got {type(d).__name__}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(f.name for f in fields(cls))})")
        parts = {name: _from_dict(sub, d.pop(name, None), f"{where}.{name}")
                 for name, sub in (("vit", ViTConfig), ("refine_net", RefineNetConfig), ("mano", ManoConfig))}
        top = _from_dict(_WiLoRTop, d, where)
        config = cls(**parts, focal_length=top.focal_length, image_size=top.image_size)
        config.validate(where)
        return config

    def validate(self, where: str = "wilor") -> None:
        _positive(where, focal_length=self.focal_length, image_size=self.image_size)
        h, w = self.vit.image_size
        if h > self.image_size or w > self.image_size:
            raise ValueError(f"{where}: vit.image_size {[h, w]} exceeds the crop size {self.image_size}")
        if self.refine_net.feat_dim != self.vit.dim:
            raise ValueError(f"{where}: refine_net.feat_dim {self.refine_net.feat_dim} must equal vit.dim "
                             f"{self.vit.dim}")
        if self.vit.num_betas != self.mano.num_betas or self.vit.num_hand_joints + 1 != self.mano.num_joints:
            raise ValueError(f"{where}: vit (num_betas {self.vit.num_betas}, num_hand_joints "
                             f"{self.vit.num_hand_joints}) does not match mano (num_betas {self.mano.num_betas}, "
                             f"num_joints {self.mano.num_joints})")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _WiLoRTop:
    """WiLoRConfig's own scalar fields, checked like the sub-configs."""

    focal_length: float = FOCAL_LENGTH
    image_size: int = CROP_SIZE

    def validate(self, where: str) -> None:
        pass


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
    kpt_shape: tuple[int, ...] = (21, 3)  # (keypoints, 2 for x,y or 3 for x,y,visibility)
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

    def validate(self, where: str = "detector") -> None:
        _positive(where, width=self.width, depth=self.depth, num_classes=self.num_classes, reg_max=self.reg_max,
                  imgsz=self.imgsz)
        if self.max_channels is not None and self.max_channels < 8:
            raise ValueError(f"{where}: max_channels must be >= 8 or null, got {self.max_channels}")
        if len(self.kpt_shape) != 2 or self.kpt_shape[0] < 1 or self.kpt_shape[1] not in (2, 3):
            raise ValueError(f"{where}: kpt_shape must be [keypoints, 2 or 3], got {list(self.kpt_shape)}")
        if self.imgsz % 32:
            raise ValueError(f"{where}: imgsz must be a multiple of 32 (the detector's stride), got {self.imgsz}")
        if len(self.names) != self.num_classes:
            raise ValueError(f"{where}: names {list(self.names)} must name each of the {self.num_classes} classes")

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "detector") -> "DetectorConfig":
        return _from_dict(cls, d, where)

    def to_dict(self) -> dict:
        return asdict(self)
