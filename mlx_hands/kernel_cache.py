"""The GPU kernel cache, and a first compile that nobody waits for.

On MLX's CUDA backend `mx.compile` turns each chain of elementwise operations into a kernel that NVRTC compiles
the first time it runs: ~3 s per kernel, ~60 s for WiLoR's 18 (14 at one crop, 4 more from two crops on),
measured on an H200 (BENCHMARKS.md). MLX keeps the results in MLX_PTX_CACHE_DIR, by default under /tmp, which a
reboot or a new container empties. Here:

* `use_kernel_cache()` points MLX_PTX_CACHE_DIR (read at MLX's first JIT compile) at
  mlx_hands.settings.kernel_cache_dir(), <cache>/kernels/<mlx version>, unless the user set it. Our own kernels
  (models/nvrtc.py) live there too.
* `Warmup` gates the compiled forwards of loaded models (models/compiled.py): while a model's kernels are not in
  the cache, the model runs uncompiled (MLX's eager GPU operations are compiled ahead, in its library) and one
  background process (`python -m mlx_hands.warm_job JOB`, mlx_hands.warm_job) compiles them on a copy of the model with random
  weights (the kernels depend on the graph and the dtypes, not on the weight values); once it has written its
  marker, the next call runs compiled, reading the kernels from the cache (~0.1 s, once). A log warning says so
  while it happens. MLX_HANDS_WARMUP=foreground compiles in the first call instead, as MLX would by itself.
* `warm(...)` compiles in the foreground; `mlx-hands warmup` runs it on a loaded model (container builds).

The background process compiles into a private folder and copies each finished file into the shared cache under
a temporary name, then renames it, so a process reading the cache never sees half a file; a lock file lets one
such process work at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from .models import kernels
from .models.compiled import compile_enabled
from .quant import quantization_config
from .settings import kernel_cache_dir, warmup_mode

log = logging.getLogger(__name__)

WILOR_BATCHES = (1, 2)  # one crop and several compile different kernels; more crops add none (measured up to 64)
# the crops' dtype is traced into the first fused kernel (the normalisation): float32 is what the pipeline sends
# (pipeline.preprocess.crop_hands), uint8 what photos cut by a user usually are. A dtype missing here cost a
# 3.9-5.6 s NVRTC compile on the frame that switched to the compiled forward (BENCHMARKS.md, H200 2026-12-03)
CROP_DTYPES = (np.float32, np.uint8)
DETECTOR_SHAPES = ((384, 640),)  # letterboxed input (h, w); the kernels do not depend on it
NAMES = {"wilor": "WiLoR", "detector": "the hand detector"}


def use_kernel_cache() -> Path:
    """Point MLX's kernel cache at mlx_hands.settings.kernel_cache_dir() unless MLX_PTX_CACHE_DIR is set (it is read
    once, at MLX's first JIT compile: call this before running a model) -> the folder."""
    folder = kernel_cache_dir()
    os.environ.setdefault("MLX_PTX_CACHE_DIR", str(folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("kernel cache %s cannot be created (%s): GPU kernels will be compiled again in every process",
                    folder, e)
    return folder


def _on_cuda() -> bool:
    return mx.default_device().type == mx.DeviceType.gpu and mx.cuda.is_available()


# ---------------------------------------------------------------- what a compiled forward depends on


def model_spec(kind: str, module) -> dict | None:
    """The description of `module` from which a random copy with the same compiled kernels is built, or None when it
    cannot be rebuilt that way (quantized models: their first compile happens in the foreground)."""
    dtype = str(module.dtype if kind == "wilor" else module.model[0].conv.weight.dtype).replace("mlx.core.", "")
    if kind == "wilor":
        if quantization_config(module) is not None:
            return None
        return {"kind": kind, "config": module.config.to_dict(), "dtype": dtype,
                "parents": [int(p) for p in module.mano.parents], "fuse_add_norm": module.backbone.fuse_add_norm,
                "deconv_gemm": module.refine_net.deconv.deconv_gemm, "kernels": list(kernels.active())}
    return {"kind": kind, "config": module.config.to_dict(), "dtype": dtype}


def signature(spec: dict) -> str:
    """A key over the spec, MLX's version and the GPU: equal keys compile the same kernels."""
    try:
        mlx_version = importlib.metadata.version("mlx")
    except importlib.metadata.PackageNotFoundError:
        mlx_version = mx.__version__
    device = mx.device_info().get("device_name", "") if hasattr(mx, "device_info") else ""
    # what the warm-up runs is part of the key: a marker written by an older recipe does not count
    recipe = {"batches": WILOR_BATCHES, "crops": [np.dtype(d).name for d in CROP_DTYPES], "detector": DETECTOR_SHAPES}
    text = json.dumps([spec, mlx_version, device, recipe], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def warm_dir(folder: Path) -> Path:
    return folder / "mlx-hands" / "warm"


def is_warm(folder: Path, sig: str) -> bool:
    """The marker of `sig` is there, and so is every kernel file it lists (a cleaned cache is cold again)."""
    try:
        files = json.loads((warm_dir(folder) / f"{sig}.done").read_text()).get("files", [])
    except (OSError, ValueError):
        return False
    return all((folder / f).is_file() for f in files)


def kernel_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for pattern in ("*.ptx", "*.cubin") for p in folder.rglob(pattern)}


def mark_warm(folder: Path, sig: str, spec: dict, seconds: float, files=()) -> None:
    d = warm_dir(folder)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{sig}.done").write_text(json.dumps({"spec": spec, "seconds": round(seconds, 1), "time": time.time(),
                                               "files": sorted(files)}))


# ---------------------------------------------------------------- compiling in the foreground


def forward(model, batch: int) -> None:
    """The compiled forward of `model` on `batch` crops of each dtype in CROP_DTYPES."""
    pixels = np.random.default_rng(batch).integers(0, 256, (batch, *model.config.vit.image_size, 3))
    for dtype in CROP_DTYPES:
        out = model(pixels.astype(dtype))
        mx.eval(out.vertices, out.keypoints_3d, out.cam, out.global_orient, out.hand_pose, out.betas)


def detect(detector, shape: tuple[int, int]) -> None:
    x = mx.array(np.random.default_rng(0).integers(0, 256, (1, *shape, 3), dtype=np.uint8))
    mx.eval(detector(x))


def warm(model=None, detector=None, *, batches=WILOR_BATCHES, shapes=DETECTOR_SHAPES, on_step=None) -> None:
    """Run the compiled forwards of `model` (a WiLoR) at each batch size and of `detector` at each (h, w), so that
    their kernels are compiled into the kernel cache now; marks them warm for Warmup. on_step(name, seconds) is
    called after each step."""
    folder = kernel_cache_dir()
    for kind, module, sizes, run in (("wilor", model, batches, forward), ("detector", detector, shapes, detect)):
        if module is None:
            continue
        gate = module._compiled.gate
        module._compiled.gate = None  # compile now, whatever the gate says
        start = time.perf_counter()
        before = kernel_files(folder) if folder.is_dir() else set()
        try:
            for size in sizes:
                t = time.perf_counter()
                run(module, size)
                if on_step:
                    what = f"batch {size}" if kind == "wilor" else f"{size[1]}x{size[0]} input"
                    on_step(f"{NAMES[kind]}, {what}", time.perf_counter() - t)
        finally:
            module._compiled.gate = gate
        spec = model_spec(kind, module)
        if spec is not None and _on_cuda() and compile_enabled(module.compile, module.training):
            mark_warm(folder, signature(spec), spec, time.perf_counter() - start,
                      kernel_files(folder) - before if folder.is_dir() else ())


# ---------------------------------------------------------------- compiling in the background


class Warmup:
    """The gate of the loaded models' compiled forwards (CompiledForward.gate): True once their kernels are in the
    cache. The first False starts one background process for all of them."""

    def __init__(self, folder: Path | None = None, mode: str | None = None):
        self.folder = folder or kernel_cache_dir()
        self.mode = mode or warmup_mode()
        self.modules: dict[str, object] = {}
        self.ready: set = set()
        self.specs: dict = {}  # (kind, key) -> (spec or None, signature)
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.failed = False

    def attach(self, kind: str, module) -> None:
        """Gate module's compiled forward (module: a WiLoR as "wilor", a YOLOPose as "detector")."""
        self.modules[kind] = module
        module._compiled.gate = lambda key, kind=kind: self(kind, key)

    def _specs(self) -> dict[str, dict]:
        specs = {kind: model_spec(kind, m) for kind, m in self.modules.items()}
        return {k: s for k, s in specs.items() if s is not None}

    def __call__(self, kind: str, key) -> bool:
        if (kind, key) in self.ready:
            return True
        if (kind, key) not in self.specs:
            spec = model_spec(kind, self.modules[kind])
            self.specs[kind, key] = (spec, None if spec is None else signature(spec))
        spec, sig = self.specs[kind, key]
        if self.mode == "background" and spec is not None and self.process is not None and self.process.poll() is None:
            # compiling in the background: uncompiled until the job has exited (its last files copied), with no
            # disk read per frame meanwhile
            return False
        if spec is None or is_warm(self.folder, sig):
            self.ready.add((kind, key))
            return True
        if self.mode == "background" and not self.failed:
            if self.process is None:
                self._start()
                return False
            self.failed = True
            log.warning("the background kernel compile ended without finishing (exit status %s; log in %s)",
                        self.process.returncode, warm_dir(self.folder))
        log.warning("compiling GPU kernels for %s now (first run with this model on this GPU and MLX version: about "
                    "a minute; kept in %s)", NAMES[kind], self.folder)
        warm(**{"model" if kind == "wilor" else "detector": self.modules[kind]})
        self.ready.add((kind, key))
        return True

    def _start(self) -> None:
        specs = self._specs()
        order = sorted(specs, key=lambda k: k != "detector")  # the quick one first
        job = {"cache": str(self.folder), "models": [{"signature": signature(specs[k]), **specs[k]} for k in order]}
        d = warm_dir(self.folder)
        d.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1(json.dumps(job, sort_keys=True).encode()).hexdigest()[:12]
        spec_file = d / f"job-{name}.json"
        spec_file.write_text(json.dumps(job))
        package_root = str(Path(__file__).resolve().parents[1])  # the child imports this copy of mlx_hands
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, MLX_PTX_CACHE_DIR=str(self.folder), PYTHONPATH=path)
        with open(d / f"job-{name}.log", "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "mlx_hands.warm_job", str(spec_file)],
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        self.started = time.perf_counter()
        log.warning("compiling GPU kernels for %s in the background (first run with this model on this GPU and MLX "
                    "version: about a minute, kept in %s); running uncompiled until then",
                    " and ".join(NAMES[k] for k in specs), self.folder)


def install(wilor=None, detector=None) -> Warmup | None:
    """Point MLX at the kernel cache and gate the models' compiled forwards (on CUDA; elsewhere nothing to do)."""
    if not _on_cuda():
        return None
    use_kernel_cache()
    gate = Warmup()
    if wilor is not None:
        gate.attach("wilor", wilor)
    if detector is not None:
        gate.attach("detector", detector)
    return gate


def copy_new(src: Path, dst: Path) -> list[str]:
    """Copy the files of src missing in dst, each under a temporary name then renamed; the files that say a module
    is complete (.ptx, .cubin) after the others. -> their paths relative to dst."""
    files = [p for p in src.rglob("*") if p.is_file() and not (dst / p.relative_to(src)).exists()]
    files.sort(key=lambda p: p.suffix in (".ptx", ".cubin"))
    for p in files:
        target = dst / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        shutil.copyfile(p, tmp)
        os.replace(tmp, target)
    return [str(p.relative_to(src)) for p in files]


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
