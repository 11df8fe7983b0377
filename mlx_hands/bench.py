"""Timing harness for the model stage and the full route, on the current MLX device.

Model stage: a batch of uint8 crops on the host -> every WiLoROutput field back on the host as numpy.
Full route: one 1280x720 frame on the host -> detect, crop, model, post-process -> Hand records.
Each measurement warms up first, then times many calls with a host clock around a call that ends with
the results in host memory (so device work is included), and reports p50/p90/p95/p99/min.

The models are mlx_hands.synthetic's (random weights: the time of a forward pass does not depend on the
weight values). The PyTorch reference and the roofline live under benchmarks/ (side_by_side.py times
WiLoR-mini with this same loop).
"""

from __future__ import annotations

import gc
import importlib.metadata as md
import logging
import platform
import sys
import time
from dataclasses import dataclass, field, fields
from typing import Callable

import mlx.core as mx
import numpy as np

from .pipeline.runner import HandPosePipeline
from .synthetic import PlantedDetector, hand_boxes, make_crops, make_frame
from .transfer import device_name, from_device, to_device

log = logging.getLogger(__name__)

PERCENTILES = (50, 90, 95, 99)


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


def median_ms(fn: Callable[[], object], iters: int = 20, warmup: int = 3) -> float:
    """The median of `iters` timed calls of fn() after `warmup` untimed ones, in ms (quick A/B measurements)."""
    return float(np.median(time_calls(lambda i: fn(), warmup=warmup, iters=iters)))


def _rate(x: float) -> str:
    """Items per second: whole numbers when large, significant digits when below 10 (a CPU's 0.43 crops/s)."""
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def format_table(results: list[Result]) -> str:
    """Markdown table, one row per result."""
    head = "| stage | impl | precision | batch | p50 ms | p90 ms | p95 ms | p99 ms | min ms | items/s | n |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        s = r.stats
        rows.append(
            f"| {r.stage} | {r.impl} | {r.precision} | {r.batch} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p95']:.2f} "
            f"| {s['p99']:.2f} | {s['min']:.2f} | {_rate(r.items_per_s)} | {len(r.times_ms)} |"
        )
    return "\n".join(rows)


# ---------------------------------------------------------------- environment


def environment() -> dict[str, str]:
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


def route_pipeline(model, detector, hands: int, seed: int = 0):
    """A HandPosePipeline over `model` whose detector plants `hands` hands in every frame."""
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
