"""Accuracy of mlx-hands' precision variants (float16, bfloat16, 8- and 4-bit) against its own float32.

For each variant: max and mean absolute difference from the float32 model on vertices and 3D keypoints
(mm), on 2D keypoints in the crop (px), and the size of model.safetensors as written by mlx-hands
(WiLoR only, no detector). Every variant is built the way `from_pretrained(dtype=..., quantize=...)`
builds it, from the same float32 weights, and run on the same fixed crops.

2D keypoints use the crop camera: the refined weak-perspective camera (s, tx, ty) of a 256-px crop with
focal length 5000 and the principal point at its centre, i.e. t = (tx, ty, 2 * 5000 / (256 * s)) and
u = 5000 * (X + tx) / (Z + tz) + 128 (v likewise), as WiLoR's training projection.

    # synthetic, trained-like weights at full size (the default; see synthetic_model for the recipe)
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 \\
        python benchmarks/accuracy.py --batch 4 --out accuracy.json
    # real weights: a converted folder, a folder of original files or a Hub repository, and your MANO
    python benchmarks/accuracy.py --model path/to/converted --crops my_crops.npz
    # GPTQ variants with real weights need hand crops or photos to calibrate on
    python benchmarks/accuracy.py --model path/to/converted --crops my_crops.npz --calibration my_photos/
    # which layers dominate an error: quantize one block / one layer kind at a time
    python benchmarks/accuracy.py --scan int4-uniform --emulate --num-crops 4

Random weights are not trained weights: the synthetic numbers show how each variant's rounding
propagates through this architecture with activations and outputs of plausible size, not the error
on real images with the released weights (run it with --model for that).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # synth.make_mano: the procedural hand (not MANO data)

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten, tree_unflatten  # noqa: E402

from mlx_hands.config import RefineNetConfig, ViTConfig, WiLoRConfig  # noqa: E402
from mlx_hands.models.geometry import rot6d_to_rotmat  # noqa: E402
from mlx_hands.hub import WiLoR  # noqa: E402
from mlx_hands.quant import quantization_config, quantized_layers  # noqa: E402
from mlx_hands.weights import build_wilor, save_model, set_precision  # noqa: E402

FOCAL, CROP = 5000.0, 256
VARIANTS = {  # name -> from_pretrained(dtype=..., quantize=...) arguments
    "float16": {"dtype": "float16"},
    "bfloat16": {"dtype": "bfloat16"},
    "int8": {"quantize": {"bits": 8, "group_size": 64}},  # the default: first blocks kept in float
    "int8-uniform": {"quantize": {"bits": 8, "group_size": 64, "uniform": True}},
    "int4": {"quantize": {"bits": 4, "group_size": 64}},  # the default: first blocks and attn.proj at 8 bits
    "int4-uniform": {"quantize": {"bits": 4, "group_size": 64, "uniform": True}},
    "int4-uniform-g32": {"quantize": {"bits": 4, "group_size": 32, "uniform": True}},
    "int4-uniform-g128": {"quantize": {"bits": 4, "group_size": 128, "uniform": True}},
    # GPTQ levels (mlx-hands quantize --calibrate), calibrated on crops other than the test crops
    "int8-gptq": {"quantize": {"bits": 8, "group_size": 64, "calibration": "crops"}},
    "int4-gptq": {"quantize": {"bits": 4, "group_size": 64, "calibration": "crops"}},
    "int4-uniform-gptq": {"quantize": {"bits": 4, "group_size": 64, "uniform": True, "calibration": "crops"}},
    "int4-uniform-g32-gptq": {"quantize": {"bits": 4, "group_size": 32, "uniform": True, "calibration": "crops"}},
}
DEFAULT_VARIANTS = ["float16", "bfloat16", "int8", "int8-uniform", "int4", "int4-uniform", "int8-gptq", "int4-gptq",
                    "int4-uniform-gptq"]
SIZES = {"tiny": ViTConfig(dim=64, depth=2, num_heads=4), "full": ViTConfig()}

# What the synthetic decoders are scaled to: the spread (std across crops) of each output, so that the
# network's answers vary from crop to crop about as much as a trained model's do between hands.
# 6D pose units ~ radians for small changes; betas in MANO units; cam: s relative, tx/ty in metres.
SPREAD = {"pose": 0.3, "betas": 0.8, "s": 0.1, "t": 0.02}
REFINE_SPREAD = 1 / 3  # RefineNet corrects the ViT's estimate: a third of the ViT's spread
HAND_FRACTION = 0.4  # the mean hand spans 40% of the crop (WiLoR crops 2.5x the detector box)


# ---------------------------------------------------------------- inputs


def make_crops(n: int, seed: int) -> np.ndarray:
    """Smooth random RGB crops (skin-toned blobs on a textured background), uint8 (n, 256, 256, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:CROP, 0:CROP] / CROP
    crops = np.empty((n, CROP, CROP, 3))
    for b in range(n):
        img = rng.uniform(30, 200, 3) + 20 * np.sin(xx[..., None] * rng.uniform(5, 40, 3) + rng.uniform(0, 6, 3))
        for _ in range(rng.integers(4, 9)):
            c, r = rng.uniform(0.25, 0.75, 2), rng.uniform(0.04, 0.2)
            blob = np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / r**2)[..., None]
            img = img * (1 - blob) + blob * rng.normal([200, 150, 120], 25)
        crops[b] = img + rng.normal(0, 6, img.shape)
    return np.clip(crops, 0, 255).astype(np.uint8)


def load_crops(path: Path) -> np.ndarray:
    """(N, 256, 256, 3) uint8 RGB crops from an .npy or an .npz holding "crops"."""
    a = np.load(path)
    a = a["crops"] if isinstance(a, np.lib.npyio.NpzFile) else a
    if a.ndim != 4 or a.shape[1:] != (CROP, CROP, 3):
        raise ValueError(f"{path}: expected crops of shape (N, {CROP}, {CROP}, 3), got {a.shape}")
    return a.astype(np.uint8)


# ---------------------------------------------------------------- synthetic, trained-like weights


class _Capture(nn.Module):
    """Stands in for a decoder: records its input, outputs zeros (the network then runs on its means)."""

    def __init__(self, out_dims: int):
        super().__init__()
        self.out_dims, self.seen = out_dims, []

    def __call__(self, h):
        self.seen.append(h)
        return mx.zeros(h.shape[:-1] + (self.out_dims,), h.dtype)


def _draw(shape, std, rng) -> mx.array:
    return mx.array(rng.normal(0, std, shape).astype(np.float32))


def _random_parameters(model: WiLoR, rng) -> None:
    """ViT init scale (N(0, 0.02), trained ViT-H weights are of that order), norms near identity,
    variance-preserving RefineNet convs; decoders and BatchNorm statistics are calibrated afterwards."""
    new = []
    for k, v in tree_flatten(model.parameters()):
        leaf = k.rsplit(".", 1)[-1]
        shape = tuple(v.shape)
        if ".deconv." in k and leaf == "weight" and len(shape) == 4:  # (O, kH, kW, I)
            fan_in = shape[3] * (shape[1] * shape[2] if "first_conv" in k else 4)  # stride 2: 4 taps per output
            a = _draw(shape, (2.0 / fan_in) ** 0.5, rng)
        elif leaf in ("running_mean", "running_var"):
            a = mx.zeros(shape) if leaf == "running_mean" else mx.ones(shape)
        elif "norm" in k or (leaf == "weight" and len(shape) == 1):  # LayerNorm / BatchNorm affine
            a = (1 + _draw(shape, 0.1, rng)) if leaf == "weight" else _draw(shape, 0.02, rng)
        elif k.startswith("backbone.init_"):
            continue
        else:
            a = _draw(shape, 0.02, rng)
        new.append((k, a))
    model.update(tree_unflatten(new))


def _mean_params(model: WiLoR, mano: dict, rng) -> None:
    """Mean pose: palm towards the camera, fingers slightly bent; betas 0; the hand spans
    HAND_FRACTION of the crop."""
    nj = model.config.vit.num_hand_joints + 1
    R = np.tile(np.eye(3, dtype=np.float32), (nj, 1, 1))
    R[1:] = _rodrigues(rng.normal(0, 0.15, (nj - 1, 3)))
    pose = np.concatenate([R[:, :, 0], R[:, :, 1]], axis=1)  # 6D: the first two columns
    extent = np.ptp(mano["v_template"][:, :2], axis=0).max()
    s = float(2 * HAND_FRACTION / extent)  # weak perspective: pixels = 128 * s * metres
    vit = model.backbone
    vit.init_hand_pose = mx.array(pose.reshape(1, -1))
    vit.init_betas = mx.zeros((1, model.config.vit.num_betas))
    vit.init_cam = mx.array([[s, 0.0, 0.0]], dtype=mx.float32)


def _rodrigues(aa: np.ndarray) -> np.ndarray:
    th = np.linalg.norm(aa, axis=-1, keepdims=True)[..., None]
    k = aa / np.maximum(np.linalg.norm(aa, axis=-1, keepdims=True), 1e-12)
    K = np.zeros(aa.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K = K - np.swapaxes(K, -1, -2)
    return (np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K).astype(np.float32)


def _calibrate_linear(layer: nn.Linear, h: mx.array, spread) -> None:
    """Scale `layer` so its outputs on the calibration inputs h (..., crops, in) have the given std
    across crops (per output; averaged over any leading token axis) and zero mean."""
    h = h.astype(mx.float32)
    y = h @ layer.weight.T  # (..., C, out)
    std = mx.sqrt(mx.mean(mx.var(y, axis=-2), axis=tuple(range(y.ndim - 2)))) if y.ndim > 2 else mx.std(y, axis=0)
    w = layer.weight * (mx.array(spread, dtype=mx.float32) / mx.maximum(std, 1e-12))[:, None]
    layer.weight = w
    y = h @ w.T
    layer.bias = -mx.mean(y.reshape(-1, y.shape[-1]), axis=0)


def _tangent(R: np.ndarray) -> np.ndarray:
    """(J, 3, 3) rotations -> (6J, 3J) block-diagonal map from small rotations w (about the camera axes)
    to the change of their 6D representation (the first two columns c1, c2): dc = w x c."""
    J = len(R)
    T = np.zeros((6 * J, 3 * J), np.float32)
    for j in range(J):
        for k in range(2):
            c = R[j][:, k]
            T[6 * j + 3 * k: 6 * j + 3 * k + 3, 3 * j: 3 * j + 3] = -np.array(  # w x c = -[c]_x w
                [[0, -c[2], c[1]], [c[2], 0, -c[0]], [-c[1], c[0], 0]])
    return T


def _calibrate_pose_decoder(layer: nn.Linear, h: mx.array, spread: float, R: np.ndarray, rng) -> None:
    """A pose decoder that predicts small rotations about the mean pose R (J, 3, 3): its 6D outputs move
    along the rotation manifold (off it by 10% of `spread`), so a1 and a2 stay well conditioned as in a
    trained model's predictions; rotation spread across crops = `spread` rad per axis."""
    h = h.astype(mx.float32)
    C = h.shape[-1]
    T = mx.array(_tangent(R))
    V = nn.Linear(C, T.shape[1])
    V.weight = _draw((T.shape[1], C), 1.0, rng)
    _calibrate_linear(V, h, spread)
    off = nn.Linear(C, T.shape[0])
    off.weight = _draw((T.shape[0], C), 1.0, rng)
    _calibrate_linear(off, h, 0.1 * spread)
    layer.weight = T @ V.weight + off.weight
    y = h @ layer.weight.T
    layer.bias = -mx.mean(y.reshape(-1, y.shape[-1]), axis=0)


def _calibrate_batchnorm(model: WiLoR, features: mx.array) -> None:
    """Running statistics = the batch statistics of the calibration crops, layer by layer."""
    dn = model.refine_net.deconv
    x = dn.first_conv[0](features)
    for layers in dn.deconv:
        y = x
        for layer in layers:
            if isinstance(layer, nn.BatchNorm):
                layer.running_mean = mx.mean(y, axis=(0, 1, 2))
                layer.running_var = mx.var(y, axis=(0, 1, 2))
            y = layer(y)


def synthetic_model(config: WiLoRConfig, mano: dict, seed: int, calib: np.ndarray) -> WiLoR:
    """A float32 WiLoR with random weights that behaves like a trained one where it matters here.

    1. Weights as _random_parameters; mean pose/shape/camera as _mean_params.
    2. BatchNorm running statistics measured on calibration crops (distinct from the test crops).
    3. Each decoder (ViT decpose/decshape/deccam, RefineNet dec_pose/dec_shape/dec_cam) rescaled so that
       its output spread across the calibration crops is SPREAD (RefineNet: a third of it) around the
       mean parameters. The error a variant adds to the features then reaches the outputs with the
       gain a trained decoder would have relative to how much the features vary between crops.
    """
    rng = np.random.default_rng(seed)
    model = WiLoR(config)
    model.mano.set_data(mano)
    _random_parameters(model, rng)
    _mean_params(model, mano, rng)
    x = mx.array(calib)
    vit, ref = model.backbone, model.refine_net
    s0 = float(vit.init_cam[0, 0])
    cam_spread = [SPREAD["s"] * s0, SPREAD["t"], SPREAD["t"]]

    caps = {n: _Capture(getattr(vit, n).weight.shape[0]) for n in ("decpose", "decshape", "deccam")}
    real = {n: getattr(vit, n) for n in caps}
    for n, c in caps.items():
        setattr(vit, n, c)
    from mlx_hands.models.wilor import normalize_crops

    out = vit(normalize_crops(x, config.vit.image_size, mx.float32))
    mx.eval(out.features)
    for n, c in caps.items():
        setattr(vit, n, real[n])
    # decpose runs on the 16 pose tokens: (B, 16, C) -> spread per token across crops
    R = np.array(rot6d_to_rotmat(vit.init_hand_pose.reshape(-1, 6)))
    # one decoder for all 16 pose tokens: tangent at the identity (the mean pose is near it)
    _calibrate_pose_decoder(vit.decpose, caps["decpose"].seen[0].transpose(1, 0, 2), SPREAD["pose"],
                            np.eye(3, dtype=np.float32)[None], rng)
    flat = {n: caps[n].seen[0].reshape(x.shape[0], -1) for n in ("decshape", "deccam")}  # one token each
    _calibrate_linear(vit.decshape, flat["decshape"], SPREAD["betas"])
    _calibrate_linear(vit.deccam, flat["deccam"], cam_spread)
    _calibrate_batchnorm(model, out.features)

    caps = {n: _Capture(getattr(ref, n).weight.shape[0]) for n in ("dec_pose", "dec_shape", "dec_cam")}
    real = {n: getattr(ref, n) for n in caps}
    for n, c in caps.items():
        setattr(ref, n, c)
    mx.eval(model(x).vertices)
    for n, c in caps.items():
        setattr(ref, n, real[n])
    f = REFINE_SPREAD
    _calibrate_pose_decoder(ref.dec_pose, caps["dec_pose"].seen[0], SPREAD["pose"] * f, R, rng)
    _calibrate_linear(ref.dec_shape, caps["dec_shape"].seen[0], SPREAD["betas"] * f)
    _calibrate_linear(ref.dec_cam, caps["dec_cam"].seen[0], [c * f for c in cam_spread])
    mx.eval(model.parameters())
    return model


# ---------------------------------------------------------------- variants and metrics


CALIBRATION = None  # crops for the variants that ask for "calibration": "crops" (set in main)


def build_variant(reference: WiLoR, mano: dict, spec: dict, emulate: bool = False) -> WiLoR:
    """The variant `spec` ({"dtype"} and/or {"quantize"}) of the float32 reference, as from_pretrained builds it."""
    if spec.get("quantize", {}).get("calibration") == "crops":
        spec = {**spec, "quantize": {**spec["quantize"], "calibration": CALIBRATION}}
    arrays = dict(tree_flatten(reference.parameters()))
    model = build_wilor(reference.config, arrays, None, "reference")
    set_precision(model, spec.get("dtype"), spec.get("quantize"), "reference")
    if emulate:
        dequantize_in_place(model)
    model.mano.set_data(mano)
    mx.eval(model.parameters())
    return model


def dequantize_in_place(model: nn.Module) -> None:
    """Replace each QuantizedLinear by a float32 Linear holding its dequantized weights: the same
    numbers through BLAS matmuls (MLX's CPU quantized kernels are slow; for layer scans only)."""
    swaps = []
    for path, m in model.named_modules():
        if isinstance(m, nn.QuantizedLinear):
            w = mx.dequantize(m.weight, m.scales, m.biases, m.group_size, m.bits, mode=m.mode).astype(mx.float32)
            lin = nn.Linear(w.shape[1], w.shape[0], bias="bias" in m)
            lin.weight = w
            if "bias" in m:
                lin.bias = m.bias.astype(mx.float32)
            swaps.append((path, lin))
    model.update_modules(tree_unflatten(swaps))


def mano_arrays(model: WiLoR) -> dict[str, np.ndarray]:
    """The MANO arrays a loaded model holds (to give its variants the same hand)."""
    from mlx_hands.models.mano import MANO_KEYS

    out = {k: np.array(getattr(model.mano, "_" + k)) for k in MANO_KEYS}
    out.update(parents=np.array(model.mano.parents), faces=model.mano.faces)
    return out


def project_crop(kp3d: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """Crop-camera projection (module docstring): (B, N, 3) metres, (B, 3) cam -> (B, N, 2) px."""
    s, tx, ty = cam[:, 0:1], cam[:, 1:2], cam[:, 2:3]
    tz = 2 * FOCAL / (CROP * s + 1e-9)
    z = kp3d[..., 2] + tz
    return np.stack([FOCAL * (kp3d[..., 0] + tx) / z, FOCAL * (kp3d[..., 1] + ty) / z], -1) + CROP / 2


def run_model(model: WiLoR, crops: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    parts = []
    for i in range(0, len(crops), batch):
        o = model(mx.array(crops[i : i + batch]))
        mx.eval(o.vertices, o.keypoints_3d, o.cam)
        parts.append({k: np.array(getattr(o, k), np.float64) for k in ("vertices", "keypoints_3d", "cam")})
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["keypoints_2d"] = project_crop(out["keypoints_3d"], out["cam"])
    return out


def compare(ref: dict, out: dict) -> dict[str, float]:
    d = {}
    for key, unit in (("vertices", 1e3), ("keypoints_3d", 1e3), ("keypoints_2d", 1.0)):
        err = np.abs(out[key] - ref[key]) * unit
        d[f"{key}_max"], d[f"{key}_mean"] = float(err.max()), float(err.mean())
    d["vertices_max_euclid_mm"] = float(np.linalg.norm(out["vertices"] - ref["vertices"], axis=-1).max() * 1e3)
    return d


def describe_outputs(out: dict) -> dict[str, float]:
    """How hand-like the reference outputs are: size in the crop, spread across crops."""
    uv = out["keypoints_2d"]
    return {
        "hand_px": float(np.mean(np.ptp(uv, axis=1).max(-1))),
        "keypoints_2d_inside_crop": float(np.mean((uv >= 0) & (uv <= CROP))),
        "vertex_spread_mm": float(np.std(out["vertices"], axis=0).mean() * 1e3),
        "cam_s_mean": float(out["cam"][:, 0].mean()),
    }


def file_size(model: WiLoR, dtype: str) -> int:
    """Bytes of model.safetensors as save_model writes this variant (WiLoR only)."""
    with tempfile.TemporaryDirectory() as tmp:
        save_model(tmp, wilor=dict(tree_flatten(model.parameters())), wilor_config=model.config, dtype=dtype,
                   quantization=quantization_config(model))
        return (Path(tmp) / "model.safetensors").stat().st_size


def time_forward(model: WiLoR, batch: int, trials: int, seed: int = 1) -> float:
    """Median seconds per forward at `batch`, after one warm-up call at batch 1 (MLX's CPU path compiles
    nothing per shape; on a GPU use mlx_hands.bench, which warms up at every batch size)."""
    mx.eval(model(mx.array(make_crops(1, seed))).vertices)
    x = mx.array(make_crops(batch, seed))
    times = []
    for _ in range(trials):
        t = time.perf_counter()
        o = model(x)
        mx.eval(o.vertices, o.keypoints_3d, o.cam)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


# ---------------------------------------------------------------- scans


KINDS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def scan_groups(config: WiLoRConfig, by: str = "group") -> dict[str, list[str]]:
    """Layer groups for --scan: each layer kind across all blocks, then each block (by="group"), or
    every transformer linear on its own (by="layer")."""
    n = config.vit.depth
    if by == "layer":
        return {f"{i}.{k}": [f"backbone.blocks.{i}.{k}"] for i in range(n) for k in KINDS}
    groups = {f"all {k}": [f"backbone.blocks.{i}.{k}" for i in range(n)] for k in KINDS}
    groups.update({f"block {i}": [f"backbone.blocks.{i}.{k}" for k in KINDS] for i in range(n)})
    return groups


def scan(reference: WiLoR, mano: dict, ref_out: dict, crops, spec: dict, batch: int, emulate: bool,
         by: str = "group") -> dict:
    """Quantize one group at a time (the rest float32): which layers the error comes from."""
    q = dict(spec["quantize"], uniform=True)
    results = {}
    all_layers = [p for p, m in reference.named_modules() if isinstance(m, nn.Linear) and ".blocks." in p]
    for name, layers in scan_groups(reference.config, by).items():
        keep = {p: False for p in all_layers if p not in layers}
        model = build_variant(reference, mano, {"quantize": dict(q, overrides=keep)}, emulate)
        r = compare(ref_out, run_model(model, crops, batch))
        results[name] = r
        print(f"  {name:16s} vertices max {r['vertices_max']:.3f} mm  mean {r['vertices_mean']:.4f} mm", flush=True)
    return results


def markdown_table(report: dict) -> str:
    """The accuracy rows of BENCHMARKS.md from a report."""
    rows = ["| variant | vertices max / mean (mm) | 3D keypoints max / mean (mm) | 2D keypoints max / mean (px) "
            "| model.safetensors (MB) |", "| --- | --- | --- | --- | --- |"]
    for name, r in report["variants"].items():
        if "vertices_max" not in r:
            cells = ["(reference)"] * 3
        else:
            cells = [f"{r[k + '_max']:.2f} / {r[k + '_mean']:.3f}" for k in ("vertices", "keypoints_3d", "keypoints_2d")]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {r['size_bytes'] / 1e6:.0f} |")
    return "\n".join(rows)


# ---------------------------------------------------------------- main


def parse_variant(name: str) -> dict:
    """A VARIANTS key, or intN-gG[-8bit:LAYER,LAYER] style names are not parsed: use the keys."""
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    return VARIANTS[name]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="real weights: anything WiLoR.from_pretrained takes (default: synthetic)")
    p.add_argument("--mano", help="MANO file for --model (default: the model folder's own)")
    p.add_argument("--size", choices=sorted(SIZES), default="full", help="synthetic model size")
    p.add_argument("--crops", type=Path, help=".npy/.npz of (N, 256, 256, 3) uint8 RGB crops (default: 8 synthetic)")
    p.add_argument("--num-crops", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help=f"from {', '.join(VARIANTS)}")
    p.add_argument("--calibration", nargs="+", metavar="PATH",
                   help="for the *-gptq variants: photos, folders or .npy/.npz crops (default with synthetic "
                        "weights: 32 synthetic crops other than the test crops)")
    p.add_argument("--num-calibration", type=int, default=32)
    p.add_argument("--emulate", action="store_true",
                   help="run quantized layers as float32 matmuls on dequantized weights (fast; for scans)")
    p.add_argument("--scan", metavar="VARIANT", help="per-layer-group error of a quantized variant")
    p.add_argument("--scan-by", choices=("group", "layer"), default="group",
                   help="--scan granularity: layer kinds and blocks, or every linear alone")
    p.add_argument("--overrides", type=Path,
                   help="JSON {layer path: {bits, group_size} or false} applied on top of each quantized variant")
    p.add_argument("--time", type=int, nargs="*", metavar="BATCH", help="also time each variant at these batch sizes")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--time-only", action="store_true", help="skip the accuracy comparison")
    p.add_argument("--out", type=Path, help="write the results as JSON")
    args = p.parse_args(argv)

    from synth import make_mano

    crops = load_crops(args.crops) if args.crops else make_crops(args.num_crops, args.seed + 100)
    t0 = time.perf_counter()
    if args.model:
        reference = WiLoR.from_pretrained(args.model, mano_path=args.mano, dtype="float32")
        if quantization_config(reference) is not None:
            raise SystemExit(f"{args.model} is quantized: the reference must be a float model")
        mano = mano_arrays(reference)
        source = f"weights from {args.model}"
    else:
        config = WiLoRConfig(vit=SIZES[args.size], refine_net=RefineNetConfig(feat_dim=SIZES[args.size].dim))
        mano = make_mano(seed=args.seed)
        reference = synthetic_model(config, mano, args.seed, make_crops(8, args.seed + 200))
        source = f"synthetic trained-like weights (seed {args.seed}), procedural MANO-sized hand"
    print(f"reference ready in {time.perf_counter() - t0:.1f} s ({source})", flush=True)
    global CALIBRATION
    if args.calibration:
        from mlx_hands.pipeline.calibration import calibration_crops, folder_calibration_crops

        if args.model and Path(args.model, "config.json").is_file():
            CALIBRATION = folder_calibration_crops(args.model, args.calibration, max_crops=args.num_calibration)
        else:
            CALIBRATION = calibration_crops(args.calibration, None, max_crops=args.num_calibration)
    elif args.model:
        if any("calibration" in VARIANTS[v].get("quantize", {}) for v in args.variants):
            raise SystemExit("the *-gptq variants with --model need --calibration (photos of hands or crops)")
    else:
        CALIBRATION = make_crops(args.num_calibration, args.seed + 300)

    t0 = time.perf_counter()
    ref_out = run_model(reference, crops, args.batch) if not args.time_only else None
    ref_time = time.perf_counter() - t0
    report = {
        "source": source, "crops": len(crops), "batch": args.batch, "machine": platform.platform(),
        "calibration_crops": None if CALIBRATION is None else len(CALIBRATION),
        "mlx": mx.__version__, "device": str(mx.default_device()),
        "reference_outputs": describe_outputs(ref_out) if ref_out else None,
        "variants": {"float32": {"size_bytes": file_size(reference, "float32"), "run_s": ref_time}},
    }
    if ref_out is not None:
        print("reference outputs:", json.dumps(report["reference_outputs"]), flush=True)

    if args.time_only:
        pass
    elif args.scan:
        spec = parse_variant(args.scan)
        print(f"scan of {args.scan}:", flush=True)
        report["scan"] = {args.scan: scan(reference, mano, ref_out, crops, spec, args.batch, args.emulate,
                                          args.scan_by)}
    else:
        extra = json.loads(args.overrides.read_text()) if args.overrides else None
        for name in args.variants:
            spec = parse_variant(name)
            if extra and "quantize" in spec:
                q = spec["quantize"]
                spec = {**spec, "quantize": {**q, "overrides": {**q.get("overrides", {}), **extra}}}
            model = build_variant(reference, mano, spec)
            size = file_size(model, spec.get("dtype", "float32"))
            layers = quantized_layers(model)
            if args.emulate and layers:
                dequantize_in_place(model)
            t0 = time.perf_counter()
            r = compare(ref_out, run_model(model, crops, args.batch))
            r["run_s"] = time.perf_counter() - t0
            r["size_bytes"] = size
            r["quantized_layers"] = {b: sum(1 for s in layers.values() if s["bits"] == b) for b in (4, 8)}
            r["emulated"] = bool(args.emulate and layers)
            report["variants"][name] = r
            print(f"{name:10s} vertices max {r['vertices_max']:.3f} mean {r['vertices_mean']:.4f} mm | "
                  f"kp3d max {r['keypoints_3d_max']:.3f} mean {r['keypoints_3d_mean']:.4f} mm | "
                  f"kp2d max {r['keypoints_2d_max']:.3f} mean {r['keypoints_2d_mean']:.4f} px | "
                  f"{r['size_bytes'] / 1e6:.0f} MB | {r['run_s']:.0f} s", flush=True)
            del model
    if args.time:
        for name in ["float32"] + list(args.variants):
            model = reference if name == "float32" else build_variant(reference, mano, parse_variant(name))
            for b in args.time:
                s = time_forward(model, b, args.trials)
                report["variants"].setdefault(name, {})[f"time_b{b}_s"] = s
                print(f"{name:10s} batch {b:3d}: {s:.2f} s per forward ({b / s:.2f} crops/s)", flush=True)
    if not args.time_only and not args.scan:
        print(markdown_table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
