"""ultralytics YOLOv8-pose checkpoint (WiLoR's detector.pt) -> canonical MLX arrays + DetectorConfig.

The checkpoint is read with the safe unpickler (ultralytics and torch.nn classes become inert
stand-ins). What it holds (ultralytics 8.x trainer / strip_optimizer): "ema" or "model" = the
pickled PoseModel in fp16, whose `yaml` dict gives nc, kpt_shape and the scale, and "train_args"
with the training imgsz (the size ultralytics predicts at when none is passed).

Conversion: every Conv's BatchNorm is folded into the conv (in float64, stored float32), as
ultralytics' own `fuse_conv_and_bn` does before inference; conv weights go to MLX layout
(O, kH, kW, I). Names are kept: `model.0.conv.weight` + `model.0.bn.*` -> `model.0.conv.weight`
+ `model.0.conv.bias`. The DFL's fixed arange conv is dropped (the MLX model computes it).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ..config import DetectorConfig
from .safe_pickle import load_torch_file, module_state_dict

log = logging.getLogger(__name__)

BN_EPS = 1e-3  # ultralytics sets every BatchNorm2d to eps=1e-3 (initialize_weights)

# yolov8-pose.yaml as (from, repeats, module) per layer; only this topology is supported.
YOLOV8_POSE_LAYERS = (
    (-1, 1, "Conv"), (-1, 1, "Conv"), (-1, 3, "C2f"), (-1, 1, "Conv"), (-1, 6, "C2f"), (-1, 1, "Conv"),
    (-1, 6, "C2f"), (-1, 1, "Conv"), (-1, 3, "C2f"), (-1, 1, "SPPF"),
    (-1, 1, "nn.Upsample"), ([-1, 6], 1, "Concat"), (-1, 3, "C2f"),
    (-1, 1, "nn.Upsample"), ([-1, 4], 1, "Concat"), (-1, 3, "C2f"),
    (-1, 1, "Conv"), ([-1, 12], 1, "Concat"), (-1, 3, "C2f"),
    (-1, 1, "Conv"), ([-1, 9], 1, "Concat"), (-1, 3, "C2f"),
    ([15, 18, 21], 1, "Pose"),
)
# Nominal (width-1.0) output channels of the yaml's Conv / C2f / SPPF layers.
_WIDTHS = {0: 64, 1: 128, 2: 128, 3: 256, 4: 256, 5: 512, 6: 512, 7: 1024, 8: 1024, 9: 1024,
           12: 512, 15: 256, 16: 256, 18: 512, 19: 512, 21: 1024}


# ------------------------------------------------------------------------------------------------
# Expected parameters (MLX names and layout) for a config


def expected_shapes(config: DetectorConfig) -> dict[str, tuple[int, ...]]:
    """Parameter name -> MLX shape of YOLOPose(config), after BN folding."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, c1, c2, k, bias=True):
        shapes[f"{name}.weight"] = (c2, k, k, c1)
        if bias:
            shapes[f"{name}.bias"] = (c2,)

    def c2f(name, c1, c2, n):
        c = c2 // 2
        conv(f"{name}.cv1.conv", c1, 2 * c, 1)
        conv(f"{name}.cv2.conv", (2 + n) * c, c2, 1)
        for j in range(n):
            conv(f"{name}.m.{j}.cv1.conv", c, c, 3)
            conv(f"{name}.m.{j}.cv2.conv", c, c, 3)

    ch = {i: config.channels(w) for i, w in _WIDTHS.items()}
    rep = {i: config.repeats(YOLOV8_POSE_LAYERS[i][1]) for i in (2, 4, 6, 8, 12, 15, 18, 21)}
    c_in = {0: 3, 1: ch[0], 2: ch[1], 3: ch[2], 4: ch[3], 5: ch[4], 6: ch[5], 7: ch[6], 8: ch[7], 9: ch[8],
            12: ch[9] + ch[6], 15: ch[12] + ch[4], 16: ch[15], 18: ch[16] + ch[12], 19: ch[18], 21: ch[19] + ch[9]}
    for i in (0, 1, 3, 5, 7, 16, 19):
        conv(f"model.{i}.conv", c_in[i], ch[i], 3)
    for i in rep:
        c2f(f"model.{i}", c_in[i], ch[i], rep[i])
    conv("model.9.cv1.conv", ch[8], ch[8] // 2, 1)
    conv("model.9.cv2.conv", 4 * (ch[8] // 2), ch[9], 1)

    feats = (ch[15], ch[18], ch[21])
    nc, nk, rm = config.num_classes, config.num_keypoint_channels, config.reg_max
    hidden = {"cv2": max(16, feats[0] // 4, 4 * rm), "cv3": max(feats[0], min(nc, 100)), "cv4": max(feats[0] // 4, nk)}
    outs = {"cv2": 4 * rm, "cv3": nc, "cv4": nk}
    for b in ("cv2", "cv3", "cv4"):
        for lvl, c in enumerate(feats):
            conv(f"model.22.{b}.{lvl}.0.conv", c, hidden[b], 3)
            conv(f"model.22.{b}.{lvl}.1.conv", hidden[b], hidden[b], 3)
            conv(f"model.22.{b}.{lvl}.2", hidden[b], outs[b], 1)
    return shapes


# ------------------------------------------------------------------------------------------------
# State dict -> MLX arrays


def fold_bn(w: np.ndarray, gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Conv weight (O, I, kH, kW) (no bias) + BatchNorm -> folded weight and bias, float32."""
    w = np.asarray(w, np.float64)
    gamma, beta, mean, var = (np.asarray(a, np.float64) for a in (gamma, beta, mean, var))
    scale = gamma / np.sqrt(var + eps)
    return (w * scale[:, None, None, None]).astype(np.float32), (beta - mean * scale).astype(np.float32)


def convert_detector_state(
    state: dict[str, np.ndarray],
    config: DetectorConfig,
    *,
    bn_eps: float | dict[str, float] = BN_EPS,
    source: str = "detector",
) -> dict[str, np.ndarray]:
    """ultralytics PoseModel state dict (torch layout, BN unfused or already fused) -> MLX arrays.

    bn_eps: one eps for every BatchNorm, or per BN module prefix (`model.0.bn`) as pickled.
    Raises ValueError naming missing or mis-shaped keys; unknown extra keys raise too.
    """
    expected = expected_shapes(config)
    out: dict[str, np.ndarray] = {}
    used = set()
    for name in expected:
        if not name.endswith(".weight") or name not in state:
            continue  # biases are filled with their weight; absent weights are reported below
        stem = name[: -len(".weight")]
        w = state[name]
        if np.ndim(w) != 4:
            raise ValueError(f"{source}: {name} has shape {np.shape(w)}, expected a 4-D conv weight")
        bn = stem[: -len(".conv")] + ".bn" if stem.endswith(".conv") else None
        if bn is not None and f"{bn}.weight" in state:  # ultralytics Conv: conv without bias + BatchNorm2d
            keys = [f"{bn}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
            absent = [k for k in keys if k not in state]
            if absent:
                raise ValueError(f"{source}: missing {absent}")
            if stem + ".bias" in state:
                raise ValueError(f"{source}: {stem}.bias next to {bn}: a Conv has a bias or a BatchNorm, not both")
            if any(np.shape(state[k]) != (np.shape(w)[0],) for k in keys):
                raise ValueError(f"{source}: {bn} shapes {[np.shape(state[k]) for k in keys]} do not match "
                                 f"{name} {np.shape(w)}")
            eps = bn_eps.get(bn, BN_EPS) if isinstance(bn_eps, dict) else bn_eps
            w, b = fold_bn(w, *(state[k] for k in keys), eps)
            used.update(keys + [f"{bn}.num_batches_tracked"])
        elif stem + ".bias" in state:  # a fused Conv, or a head's last plain Conv2d
            w, b = np.asarray(w, np.float32), np.asarray(state[stem + ".bias"], np.float32)
            used.add(stem + ".bias")
        else:
            continue  # the bias is reported missing below
        used.add(name)
        out[name] = np.ascontiguousarray(w.transpose(0, 2, 3, 1))  # (O, I, kH, kW) -> (O, kH, kW, I)
        out[stem + ".bias"] = b

    dfl = "model.22.dfl.conv.weight"
    if dfl in state:
        if np.shape(state[dfl]) != (1, config.reg_max, 1, 1) or not np.array_equal(
            np.asarray(state[dfl], np.float32).ravel(), np.arange(config.reg_max, dtype=np.float32)
        ):
            raise ValueError(f"{source}: {dfl} is not the fixed arange({config.reg_max}) DFL projection")
        used.add(dfl)

    missing = sorted(set(expected) - set(out))
    if missing:
        raise ValueError(f"{source}: {len(missing)} missing keys for {_describe(config)}: {missing[:12]}"
                         + (" ..." if len(missing) > 12 else ""))
    bad = [f"{k} {out[k].shape} (expected {expected[k]})" for k in expected if out[k].shape != expected[k]]
    if bad:
        raise ValueError(f"{source}: {len(bad)} mis-shaped keys for {_describe(config)}: {bad[:12]}")
    extra = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
    if extra:
        raise ValueError(f"{source}: {len(extra)} unexpected keys (not YOLOv8-pose?): {extra[:12]}")
    return out


def _describe(config: DetectorConfig) -> str:
    return (f"YOLOv8-pose width {config.width} depth {config.depth} max_channels {config.max_channels} "
            f"nc {config.num_classes} kpt_shape {tuple(config.kpt_shape)}")


# ------------------------------------------------------------------------------------------------
# The pickled checkpoint


def _attr(obj, name, default=None):
    return getattr(obj, "__dict__", {}).get(name, default)


def _named_modules(obj, prefix: str = ""):
    yield prefix, obj
    for name, child in (_attr(obj, "_modules") or {}).items():
        if child is not None:
            yield from _named_modules(child, f"{prefix}.{name}" if prefix else name)


def _class_name(obj) -> str:
    return getattr(type(obj), "_standin_path", type(obj).__name__).rpartition(".")[2]


def config_from_checkpoint(ckpt: dict, model, source: str = "detector") -> DetectorConfig:
    """DetectorConfig from the pickled PoseModel's `yaml` and the checkpoint's train_args."""
    yaml = _attr(model, "yaml")
    if not isinstance(yaml, dict):
        raise ValueError(f"{source}: the pickled model has no `yaml` dict (not an ultralytics model?)")
    layers = list(yaml.get("backbone", [])) + list(yaml.get("head", []))
    if len(layers) != len(YOLOV8_POSE_LAYERS):
        raise ValueError(f"{source}: {len(layers)} layers in the model yaml, expected the "
                         f"{len(YOLOV8_POSE_LAYERS)} of yolov8-pose (only YOLOv8-pose is supported)")
    for i, (layer, want) in enumerate(zip(layers, YOLOV8_POSE_LAYERS)):
        got = (layer[0], layer[1], layer[2])
        if got != want:
            raise ValueError(f"{source}: model layer {i} is {got}, expected {want} (only YOLOv8-pose is supported)")
    act = yaml.get("activation")
    if act and act.replace(" ", "") not in ("nn.SiLU()", "torch.nn.SiLU()"):
        raise ValueError(f"{source}: activation {act!r} is not supported (SiLU only)")

    scales = yaml.get("scales")
    if scales:
        scale = yaml.get("scale") or next(iter(scales))  # ultralytics also falls back to the first scale
        if scale not in scales:
            raise ValueError(f"{source}: scale {scale!r} not among the yaml's scales {list(scales)}")
        depth, width, max_channels = scales[scale]
    else:
        depth, width, max_channels = yaml.get("depth_multiple", 1.0), yaml.get("width_multiple", 1.0), None

    kpt_shape = tuple(int(v) for v in (_attr(model, "kpt_shape") or yaml.get("kpt_shape") or ()))
    if len(kpt_shape) != 2 or kpt_shape[1] not in (2, 3):
        raise ValueError(f"{source}: kpt_shape {kpt_shape} is not (K, 2) or (K, 3)")
    nc = int(yaml["nc"])

    args = ckpt.get("train_args")
    imgsz = args.get("imgsz") if isinstance(args, dict) else None
    if imgsz is None:  # older files: the args the trainer attached to the model (dict or namespace)
        margs = _attr(model, "args")
        imgsz = margs.get("imgsz") if isinstance(margs, dict) else _attr(margs, "imgsz")
    if imgsz is None:
        log.warning("%s: no training imgsz recorded; using ultralytics' default 640", source)
        imgsz = 640
    if isinstance(imgsz, (list, tuple)):
        if len(set(imgsz)) != 1:
            raise ValueError(f"{source}: non-square training imgsz {imgsz} is not supported")
        imgsz = imgsz[0]
    names = _attr(model, "names")
    names = tuple(str(names[i]) for i in range(nc)) if isinstance(names, dict) and len(names) == nc else \
        DetectorConfig.names if nc == 2 else tuple(str(i) for i in range(nc))
    return DetectorConfig(
        width=float(width),
        depth=float(depth),
        max_channels=None if max_channels is None or math.isinf(max_channels) else int(max_channels),
        num_classes=nc,
        kpt_shape=kpt_shape,
        imgsz=int(imgsz),
        names=names,
    )


def convert_detector(path: str | Path) -> tuple[dict[str, np.ndarray], DetectorConfig]:
    """Read an ultralytics YOLOv8-pose .pt (WiLoR's detector.pt) -> (MLX arrays, DetectorConfig)."""

    path = Path(path)
    ckpt = load_torch_file(path, stand_ins=("ultralytics.", "torch.nn.modules."))
    if not isinstance(ckpt, dict) or not (ckpt.get("ema") or ckpt.get("model")):
        raise ValueError(f"{path}: not an ultralytics checkpoint (expected a dict with 'model' or 'ema')")
    model = ckpt.get("ema") or ckpt["model"]  # attempt_load_one_weight's preference
    if _class_name(model) != "PoseModel":
        raise ValueError(f"{path}: the checkpoint holds a {_class_name(model)}, expected an ultralytics PoseModel")
    config = config_from_checkpoint(ckpt, model, source=str(path))

    try:
        state = module_state_dict(model)
    except TypeError as e:
        raise ValueError(f"{path}: cannot read the model's tensors ({e})") from None
    dfl = state.get("model.22.dfl.conv.weight")
    if dfl is not None and np.ndim(dfl) == 4:
        config.reg_max = int(np.shape(dfl)[1])
    eps = {}
    for name, m in _named_modules(model):
        if _class_name(m) == "BatchNorm2d":
            e = _attr(m, "eps")
            if e is None:
                raise ValueError(f"{path}: BatchNorm {name} has no eps")
            eps[name] = float(e)
    arrays = convert_detector_state(state, config, bn_eps=eps, source=str(path))
    log.info("converted %s: %d arrays, %s, imgsz %d", path, len(arrays), _describe(config), config.imgsz)
    return arrays, config
