"""Timing harness for the model stage and the full route, on the current MLX device.

Model stage: a batch of uint8 crops on the host -> every WiLoROutput field back on the host as numpy.
Full route: one 1280x720 frame on the host -> detect, crop, model, post-process -> Hand records.
Each measurement warms up first, then times many calls with a host clock around a call that ends with
the results in host memory (so device work is included), and reports p50/p90/p95/p99/min.

The PyTorch reference (WiLoR-mini's own model code, fetched by the user and passed by path) is timed by
the same loop on the same inputs; torch is imported only when asked for.

Random weights throughout: the time of a forward pass does not depend on the weight values.
"""

from __future__ import annotations

import gc
import logging
import math
import platform
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import mlx.core as mx
import numpy as np

from .config import ManoConfig, WiLoRConfig
from .models.transfer import from_device, to_device

log = logging.getLogger(__name__)

PRECISIONS = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
PERCENTILES = (50, 90, 95, 99)
FRAME_SIZE = (720, 1280)  # (H, W) of the full-route frame


# ---------------------------------------------------------------- results


@dataclass
class Result:
    stage: str  # "model" (crops -> outputs) or "route" (frame -> hands)
    impl: str  # "mlx", "mlx-eager", "torch", ...
    precision: str  # float32 / float16 / bfloat16 / q8 / q4
    batch: int  # crops per call (model stage) or hands per frame (route)
    device: str
    times_ms: np.ndarray = field(repr=False)
    warmup: int = 0
    peak_memory_mb: float | None = None
    note: str = ""

    @property
    def stats(self) -> dict[str, float]:
        return summarize(self.times_ms)

    @property
    def items_per_s(self) -> float:
        """Crops (model stage) or frames (route) per second at the median."""
        per_call = self.batch if self.stage == "model" else 1
        return per_call / self.stats["p50"] * 1e3

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("stage", "impl", "precision", "batch", "device", "warmup", "note")}
        d.update(self.stats, iters=len(self.times_ms), items_per_s=self.items_per_s,
                 peak_memory_mb=self.peak_memory_mb, times_ms=[round(float(t), 4) for t in self.times_ms])
        return d


def summarize(times_ms) -> dict[str, float]:
    t = np.asarray(times_ms, np.float64)
    if t.size == 0:
        raise ValueError("no timings to summarize")
    out = {f"p{p}": float(np.percentile(t, p)) for p in PERCENTILES}
    out.update(min=float(t.min()), mean=float(t.mean()))
    return out


def time_calls(fn: Callable[[int], object], *, warmup: int, iters: int, max_seconds: float | None = None,
               min_iters: int = 5) -> np.ndarray:
    """Call fn(i) warmup times untimed, then up to iters times timed (ms each).

    Stops early once max_seconds of timed calls have passed (never before min_iters), so a slow device
    still finishes. The garbage collector is paused inside the timed loop.
    """
    for i in range(warmup):
        fn(i)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    times = []
    start = time.perf_counter()
    try:
        for i in range(iters):
            t0 = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t0) * 1e3)
            if max_seconds is not None and i + 1 >= min_iters and time.perf_counter() - start > max_seconds:
                break
    finally:
        if was_enabled:
            gc.enable()
    return np.array(times)


def format_table(results: list[Result]) -> str:
    """Markdown table, one row per result."""
    head = "| stage | impl | precision | batch | p50 ms | p90 ms | p95 ms | p99 ms | min ms | items/s | n |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        s = r.stats
        rows.append(
            f"| {r.stage} | {r.impl} | {r.precision} | {r.batch} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p95']:.2f} "
            f"| {s['p99']:.2f} | {s['min']:.2f} | {r.items_per_s:.0f} | {len(r.times_ms)} |"
        )
    return "\n".join(rows)


# ---------------------------------------------------------------- environment


def device_name() -> str:
    """'gpu (NVIDIA H100 80GB HBM3)', 'cpu (AMD EPYC)', ..."""
    dev = mx.default_device()
    try:
        name = mx.device_info().get("device_name", "")
    except Exception:  # older MLX without device_info
        name = ""
    return f"{dev.type.name} ({name})" if name else dev.type.name


def environment() -> dict[str, str]:
    import importlib.metadata as md

    env = {"python": platform.python_version(), "platform": platform.platform(), "mlx": mx.__version__,
           "numpy": np.__version__, "device": device_name()}
    for dist in ("mlx-cuda", "mlx-cuda-12", "mlx-cuda-13", "mlx-metal", "mlx-cpu"):
        try:
            env[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = torch.__version__
    env["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    return env


# ---------------------------------------------------------------- random models


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
    (a key of PRECISIONS) and, with bits, quantized through mlx_hands.quantize.quantize_model."""
    from .models.wilor import WiLoR

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    mx.random.seed(seed)
    model = WiLoR(config or WiLoRConfig())
    model.mano.set_data(random_mano(model.config.mano, seed))
    nj = model.config.vit.num_hand_joints + 1
    vit = model.backbone
    vit.init_hand_pose = mx.array(np.tile([1.0, 0, 0, 0, 1.0, 0], nj)[None].astype(np.float32))
    vit.init_cam = mx.array([[0.9, 0.0, 0.0]])
    model.set_dtype(PRECISIONS[precision])
    if bits:
        quantize_model = _quantizer()
        if quantize_model is None:
            raise ValueError("quantized variants need mlx_hands.quantize.quantize_model, which this build lacks")
        quantize_model(model, bits, group_size)
    mx.eval(model.parameters())
    return model


def _quantizer():
    try:
        from .quantize import quantize_model
    except ImportError:
        return None
    return quantize_model


def quantization_available() -> bool:
    return _quantizer() is not None


def make_crops(batch: int, seed: int = 0, size: int = 256) -> np.ndarray:
    """Random uint8 RGB crops (B, size, size, 3)."""
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------- model stage


def mlx_model_stage(model) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """host uint8 crops -> every WiLoROutput field as a numpy array (the timed unit of the model stage).
    Only the columns the network reads travel to the device (WiLoR.input_window), as in the pipeline."""

    def run(crops: np.ndarray) -> dict[str, np.ndarray]:
        out = model(to_device(model.input_window(crops)))
        return from_device({f.name: getattr(out, f.name) for f in fields(out)})

    return run


def bench_model_stage(run: Callable[[np.ndarray], dict], batch: int, *, impl: str, precision: str,
                      device: str | None = None, warmup: int = 5, iters: int = 50,
                      max_seconds: float | None = None, input_sets: int = 3, seed: int = 0,
                      peak_memory: bool = True, note: str = "") -> Result:
    """Time run(crops) on batch-size crops; input_sets different batches are cycled through."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    inputs = [make_crops(batch, seed + i) for i in range(input_sets)]
    out = run(inputs[0])
    bad = [k for k, v in out.items() if not np.isfinite(v).all()]
    if bad:
        note = (note + "; " if note else "") + f"non-finite outputs: {', '.join(bad)}"
        log.warning("%s %s b=%d: non-finite outputs %s", impl, precision, batch, bad)
    if peak_memory and impl.startswith("mlx"):
        mx.reset_peak_memory()
    times = time_calls(lambda i: run(inputs[i % input_sets]), warmup=warmup, iters=iters, max_seconds=max_seconds)
    peak = mx.get_peak_memory() / 2**20 if peak_memory and impl.startswith("mlx") else None
    return Result("model", impl, precision, batch, device or device_name(), times, warmup, peak, note)


# ---------------------------------------------------------------- full route


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


def random_detector(precision: str = "float32", config=None, seed: int = 0):
    """The YOLOv8-pose hand detector with random weights, cast to precision."""
    from .config import DetectorConfig
    from .models.yolo import YOLOPose

    mx.random.seed(seed)
    det = YOLOPose(config or DetectorConfig())
    det.set_dtype(PRECISIONS[precision])
    mx.eval(det.parameters())
    return det


def route_pipeline(model, detector, hands: int, seed: int = 0):
    """A HandPosePipeline over `model` whose detector plants `hands` hands in every frame."""
    from .pipeline.runner import HandPosePipeline

    return HandPosePipeline(model, PlantedDetector(detector, hand_boxes(hands, seed)))


def bench_route(pipe, hands: int, *, impl: str, precision: str, warmup: int = 5, iters: int = 50,
                max_seconds: float | None = None, input_sets: int = 3, seed: int = 0, note: str = "") -> Result:
    """Time pipe(frame) on 1280x720 frames that each hold `hands` (planted) hands -> list[Hand]."""
    frames = [make_frame(seed + i) for i in range(input_sets)]
    found = len(pipe(frames[0]))
    if found != hands:
        raise RuntimeError(f"route bench: expected {hands} hands per frame, the pipeline returned {found}")
    mx.reset_peak_memory()
    times = time_calls(lambda i: pipe(frames[i % input_sets]), warmup=warmup, iters=iters, max_seconds=max_seconds)
    stages = {k: round(v * 1e3, 3) for k, v in pipe.last_timings.items()}
    note = (note + "; " if note else "") + "last call's stages ms " + ", ".join(f"{k} {v}" for k, v in stages.items())
    return Result("route", impl, precision, hands, device_name(), times, warmup, mx.get_peak_memory() / 2**20, note)


# ---------------------------------------------------------------- ceilings and floors


def model_cost(config: WiLoRConfig | None = None) -> dict[str, float]:
    """Arithmetic per crop (FLOPs, a multiply-add counted as 2) of the matrix work, by part.

    ViT: patch embedding, per block the four linears and the two attention products; RefineNet: the 1x1
    conv and the transposed convolutions (2 * H_in * W_in * C_in * C_out * k * k each); MANO: the
    blend-shape, pose-corrective and skinning products (two passes).
    """
    c = config or WiLoRConfig()
    v = c.vit
    hp, wp = v.grid
    P = hp * wp
    T = P + v.num_hand_joints + 3
    d, hidden = v.dim, int(v.dim * v.mlp_ratio)
    patch = 2 * P * 3 * v.patch_size**2 * d
    block = 2 * T * d * (3 * d + d + 2 * hidden) + 2 * 2 * T * T * d
    fd = c.refine_net.feat_dim
    refine = 2 * P * fd * (fd // 2)
    steps = [[fd // 2, fd // 4], [fd // 2, fd // 4, fd // 8], [fd // 2, fd // 4, fd // 8, fd // 8]]
    for dims in steps[: int(math.log2(c.refine_net.upscale)) + 1]:
        h, w = hp, wp
        for ci, co in zip(dims[:-1], dims[1:]):
            refine += 2 * h * w * ci * co * 16
            h, w = 2 * h, 2 * w
    m = c.mano
    V, J = m.num_vertices, m.num_joints
    mano = 2 * (2 * V * 3 * m.num_betas + 2 * m.num_pose_basis * V * 3 + 2 * V * J * 16 + 2 * J * V * 3)
    return {"vit": float(patch + v.depth * block), "refine_net": float(refine), "mano": float(mano),
            "total": float(patch + v.depth * block + refine + mano)}


def weight_bytes(model) -> int:
    """Bytes of every parameter (ViT + RefineNet, as stored; quantized layers at their packed size)."""
    from mlx.utils import tree_flatten

    return int(sum(a.nbytes for _, a in tree_flatten(model.parameters())))


def _median_seconds(fn: Callable[[], None], iters: int) -> float:
    fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _on_gpu() -> bool:
    return mx.default_device().type == mx.DeviceType.gpu


def measure_bandwidth(nbytes: int | None = None, iters: int = 10) -> float:
    """Device-memory bandwidth in GB/s through MLX: a large elementwise copy, bytes read + written
    (1 GiB on a GPU, 256 MiB on the CPU)."""
    n = (nbytes or (1 << 30 if _on_gpu() else 1 << 28)) // 4
    a = mx.random.uniform(shape=(n,))
    mx.eval(a)
    dt = _median_seconds(lambda: mx.eval(a * 1.0001), iters)
    return 2 * n * 4 / dt / 1e9


def measure_matmul(n: int | None = None, dtype=None, iters: int = 10) -> float:
    """Matrix rate in TFLOP/s through MLX: an n x n x n product on random data (GPU: 8192, bfloat16;
    CPU: 2048, float32, MLX's CPU having no fast half-precision GEMM)."""
    n = n or (8192 if _on_gpu() else 2048)
    dtype = dtype or (mx.bfloat16 if _on_gpu() else mx.float32)
    a = mx.random.normal((n, n)).astype(dtype)
    b = mx.random.normal((n, n)).astype(dtype)
    mx.eval(a, b)
    dt = _median_seconds(lambda: mx.eval(a @ b), iters)
    return 2 * n**3 / dt / 1e12


def floors(config: WiLoRConfig, model, bandwidth_gbs: float, matmul_tflops: float, batch: int) -> dict[str, float]:
    """The two lower bounds of one model-stage call, in ms: weights once over bandwidth; FLOPs over rate."""
    return {"bytes_ms": weight_bytes(model) / (bandwidth_gbs * 1e9) * 1e3,
            "flops_ms": batch * model_cost(config)["total"] / (matmul_tflops * 1e12) * 1e3}


# ---------------------------------------------------------------- the PyTorch reference


def _stub_timm() -> None:
    """WiLoR-mini imports drop_path / to_2tuple / trunc_normal_ from timm; none acts at inference."""
    import types

    import torch

    layers = types.ModuleType("timm.models.layers")
    layers.drop_path = lambda x, drop_prob=0.0, training=False: x
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    def trunc_normal_(t, std=1.0, **_):
        with torch.no_grad():
            return t.normal_(0, std)

    layers.trunc_normal_ = trunc_normal_
    timm, models = types.ModuleType("timm"), types.ModuleType("timm.models")
    timm.models, models.layers = models, layers
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})


def _write_smplx_mano(arrays: dict[str, np.ndarray], path: Path) -> None:
    """MANO arrays in the pickle layout smplx.MANOLayer reads."""
    import pickle

    V = arrays["v_template"].shape[0]
    parents = arrays["parents"].astype(np.int64)
    data = {
        "v_template": arrays["v_template"].astype(np.float64),
        "shapedirs": arrays["shapedirs"].astype(np.float64),
        "posedirs": arrays["posedirs"].T.reshape(V, 3, -1).astype(np.float64),
        "J_regressor": arrays["J_regressor"].astype(np.float64),
        "weights": arrays["lbs_weights"].astype(np.float64),
        "kintree_table": np.stack([np.where(parents < 0, 2**32 - 1, parents), np.arange(len(parents))]),
        "f": arrays["faces"].astype(np.uint32),
        "hands_components": np.eye(45),
        "hands_mean": np.zeros(45),
    }
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)


def torch_reference_stage(reference: str | Path, precision: str = "float32", device: str | None = None,
                          config: WiLoRConfig | None = None, seed: int = 0):
    """WiLoR-mini's own model (a checkout of warmshao/WiLoR-mini at `reference`) with random weights.

    Returns (run, device) where run(crops uint8 (B, 256, 256, 3)) -> dict of numpy outputs, timed like
    mlx_model_stage: host crops in, every output back on the host. Needs torch, smplx==0.1.28 and roma.
    """
    import tempfile

    import torch

    reference = Path(reference)
    if not (reference / "wilor_mini" / "models" / "wilor.py").is_file():
        raise FileNotFoundError(f"--reference {reference}: expected a WiLoR-mini checkout (wilor_mini/models/wilor.py)")
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if precision not in dtypes:
        raise ValueError(f"reference precision must be one of {sorted(dtypes)}, got {precision!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        import timm.models.layers  # noqa: F401
    except Exception:
        _stub_timm()
    if str(reference) not in sys.path:
        sys.path.insert(0, str(reference))
    from torch import nn
    from wilor_mini.models.mano_wrapper import MANO
    from wilor_mini.models.refinement_net import RefineNet
    from wilor_mini.models.vit import ViT
    from wilor_mini.models.wilor import WiLor

    c = config or WiLoRConfig()
    v = c.vit
    torch.manual_seed(seed)
    nj = v.num_hand_joints + 1
    with tempfile.TemporaryDirectory() as tmp:
        mano_pkl, mean_npz = Path(tmp) / "MANO_RIGHT.pkl", Path(tmp) / "mano_mean_params.npz"
        _write_smplx_mano(random_mano(c.mano, seed), mano_pkl)
        np.savez(mean_npz, pose=np.tile([1.0, 0, 0, 0, 1.0, 0], nj).astype(np.float32),
                 shape=np.zeros(v.num_betas, np.float32), cam=np.array([0.9, 0.0, 0.0], np.float32))
        model = WiLor.__new__(WiLor)
        nn.Module.__init__(model)
        model.backbone = ViT(img_size=tuple(v.image_size), patch_size=v.patch_size, embed_dim=v.dim, depth=v.depth,
                             num_heads=v.num_heads, ratio=1, mlp_ratio=v.mlp_ratio, qkv_bias=True,
                             mano_mean_path=str(mean_npz))
        model.refine_net = RefineNet(feat_dim=c.refine_net.feat_dim, upscale=c.refine_net.upscale)
        model.mano = MANO(model_path=str(mano_pkl), create_body_pose=False)
    model.FOCAL_LENGTH, model.IMAGE_SIZE = c.focal_length, c.image_size
    model.IMAGE_MEAN = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 1, 1, 3)
    model.IMAGE_STD = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 1, 1, 3)
    dtype = dtypes[precision]
    model = model.to(device=device, dtype=dtype).eval()

    @torch.inference_mode()
    def run(crops: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(crops).to(device).to(dtype)
        out = model(x)
        return {k: v.float().cpu().numpy() for k, v in out.items() if torch.is_tensor(v)}

    return run, device
