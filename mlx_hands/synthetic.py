"""Synthetic models and inputs for benchmarks and tests: random weights in the real shapes, random MANO-shaped
arrays (not a hand, not MANO data), frames with hands planted where the route benchmark needs them.

The time of a forward pass does not depend on the weight values, so these stand in for the real files.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from .config import CROP_SIZE, MANO_FILE, DetectorConfig, ManoConfig, RefineNetConfig, ViTConfig, WiLoRConfig
from .models import mx_dtype
from .models.wilor import WiLoR
from .models.yolo import YOLOPose
from .quant import quantize_model
from .transfer import to_device
from .weights import model_arrays, save_mano, save_model

FRAME_SIZE = (720, 1280)  # (H, W) of the full-route frame
# a 2-block toy WiLoR and a narrow detector for smoke tests (`mlx-hands bench --size tiny`, the test suite)
TINY = WiLoRConfig(vit=ViTConfig(dim=64, depth=2, num_heads=4), refine_net=RefineNetConfig(feat_dim=64))
TINY_DETECTOR = DetectorConfig(width=0.25, depth=0.33, max_channels=64)


def random_mano(config: ManoConfig | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """MANO-shaped arrays with plausible magnitudes (metres) for timing; not a hand."""
    c = config or ManoConfig()
    rng = np.random.default_rng(seed)
    V, J, K = c.num_vertices, c.num_joints, c.num_betas
    fingers = (J - 1) // 3
    parents = [-1] + [0 if (j - 1) % 3 == 0 else j - 1 for j in range(1, 1 + 3 * fingers)]
    parents += [j - 1 for j in range(len(parents), J)]
    weights = rng.random((V, J)) ** 4
    J_reg = rng.random((J, V)) ** 8
    return {
        "v_template": rng.normal(0, 0.04, (V, 3)).astype(np.float32),
        "shapedirs": rng.normal(0, 1e-3, (V, 3, K)).astype(np.float32),
        "posedirs": rng.normal(0, 1e-3, (c.num_pose_basis, V * 3)).astype(np.float32),
        "J_regressor": (J_reg / J_reg.sum(1, keepdims=True)).astype(np.float32),
        "lbs_weights": (weights / weights.sum(1, keepdims=True)).astype(np.float32),
        "parents": np.array(parents, np.int32),
        "faces": rng.integers(0, V, (c.num_faces, 3)).astype(np.int32),
    }


def random_model(config: WiLoRConfig | None = None, precision: str = "float32", *, seed: int = 0,
                 bits: int | None = None, group_size: int = 64):
    """WiLoR with its default random init, random MANO arrays and a sane MANO mean, cast to precision
    (one of config.DTYPES) and, with bits, quantized through mlx_hands.quant.quantize_model."""
    mx.random.seed(seed)
    model = WiLoR(config or WiLoRConfig())
    model.mano.set_data(random_mano(model.config.mano, seed))
    nj = model.config.vit.num_hand_joints + 1
    vit = model.backbone
    vit.init_hand_pose = mx.array(np.tile([1.0, 0, 0, 0, 1.0, 0], nj)[None].astype(np.float32))
    vit.init_cam = mx.array([[0.9, 0.0, 0.0]])
    model.set_dtype(mx_dtype(precision))
    if bits:
        quantize_model(model, bits, group_size)
    mx.eval(model.parameters())
    return model


def make_crops(batch: int, seed: int = 0, size: int = CROP_SIZE) -> np.ndarray:
    """Random uint8 RGB crops (B, size, size, 3)."""
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def random_detector(precision: str = "float32", config=None, seed: int = 0):
    """The YOLOv8-pose hand detector with random weights, cast to precision."""
    mx.random.seed(seed)
    det = YOLOPose(config or DetectorConfig())
    det.set_dtype(mx_dtype(precision))
    mx.eval(det.parameters())
    return det


def make_frame(seed: int = 0) -> np.ndarray:
    """A 1280x720 RGB frame with smooth random content (uint8)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (FRAME_SIZE[0] // 40, FRAME_SIZE[1] // 40, 3)).astype(np.float32)
    frame = np.kron(small, np.ones((40, 40, 1), np.float32))
    return np.clip(frame + rng.normal(0, 10, frame.shape), 0, 255).astype(np.uint8)


def hand_boxes(n: int, seed: int = 0) -> list[np.ndarray]:
    """n non-overlapping hand boxes (x1, y1, x2, y2) inside the frame, 120-220 px wide."""
    rng = np.random.default_rng(seed)
    H, W = FRAME_SIZE
    cols = max(1, min(n, 5))
    out = []
    for i in range(n):
        cx = (i % cols + 0.5) * W / cols + rng.uniform(-20, 20)
        cy = (i // cols + 0.5) * H / math.ceil(n / cols) + rng.uniform(-20, 20)
        s = rng.uniform(120, 220)
        out.append(np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], np.float32))
    return out


class PlantedDetector:
    """The real detector network, timed as usual, with n confident hands planted in its decoded output.

    Random detector weights find no hands; the route needs n of them. The network still runs on the
    letterboxed frame and its output (same shape, same host transfer) still goes through the pipeline's
    NMS and rescaling; only the values are replaced by boxes at known places.
    """

    def __init__(self, detector, boxes: list[np.ndarray], frame_hw: tuple[int, int] = FRAME_SIZE):
        self.detector = detector
        self.config = detector.config
        self.boxes = [np.asarray(b, np.float32) for b in boxes]
        self.frame_hw = frame_hw
        self._planted: dict = {}

    def __call__(self, x: mx.array) -> mx.array:
        raw = self.detector(x)
        key = (tuple(x.shape[1:3]), tuple(raw.shape))
        if key not in self._planted:  # on the device once, so that the output is a device array like raw's
            self._planted[key] = to_device(self.planted(*key))
            mx.eval(self._planted[key])
        # the planted values, computed from raw (so the network runs in the same graph, no extra sync)
        return mx.where(raw == raw, self._planted[key], self._planted[key])

    def planted(self, input_hw: tuple[int, int], raw_shape: tuple[int, ...]) -> np.ndarray:
        (h, w), (H, W) = input_hw, self.frame_hw
        gain = min(h / H, w / W)
        pad_x, pad_y = (w - W * gain) / 2, (h - H * gain) / 2
        out = np.zeros(raw_shape, np.float32)
        nc = self.config.num_classes
        for i, (x1, y1, x2, y2) in enumerate(self.boxes):
            out[0, :4, i] = [(x1 + x2) / 2 * gain + pad_x, (y1 + y2) / 2 * gain + pad_y, (x2 - x1) * gain,
                             (y2 - y1) * gain]
            out[0, 4 + i % nc, i] = 0.9  # alternate left and right hands
        return out


def write_model(folder, config: WiLoRConfig = TINY, detector_config: DetectorConfig | None = TINY_DETECTOR, *,
                mano: dict | None = None, dtype: str = "float32", seed: int = 0, source: dict | None = None):
    """A converted model folder (mlx_hands.weights) holding a random WiLoR of `config`, a random detector of
    `detector_config` (None: no detector) and `mano` (default: random_mano's arrays) -> the folder.

    A random detector scores its anchors near 0.5, so it proposes "hands" at the default threshold; conf=0 always
    gives max_det of them. For tests, benchmarks and load tests: the time of a forward pass and the shape of every
    result are those of the real model."""
    model = random_model(config, dtype, seed=seed)
    det = random_detector(dtype, detector_config, seed) if detector_config is not None else None
    folder = save_model(folder, wilor=model_arrays(model), wilor_config=config, dtype=dtype, source=source,
                        detector=None if det is None else model_arrays(det), detector_config=detector_config)
    save_mano(random_mano(config.mano, seed) if mano is None else mano, folder / MANO_FILE)
    return folder
