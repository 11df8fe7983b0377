"""Our CUDA kernels, compiled once per GPU architecture and kept on disk.

`mx.fast.cuda_kernel` compiles its source with NVRTC in every process (MLX keeps only its own fused kernels in
its disk cache), and each compile reads MLX's device headers: ~2-2.7 s per kernel measured on an H200, ~15 s per
process for our eight kernels (BENCHMARKS.md). Here each kernel is a self-contained source (only cuda_fp16.h and
cuda_bf16.h), compiled by NVRTC (~0.2 s) into a cubin for this GPU, stored under
mlx_hands.settings.kernel_cache_dir()/mlx-hands/ and run through `mx.fast.precompiled_cuda_kernel`; later
processes read the file. NVRTC and the driver are called through ctypes: MLX's CUDA backend ships and loads both.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..settings import kernel_cache_dir

log = logging.getLogger(__name__)

_NVRTC_NAMES = ("libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so")
_lock = threading.Lock()


class NVRTCError(RuntimeError):
    pass


def _site_packages() -> Path:
    return Path(mx.__file__).resolve().parents[1]


@functools.cache
def _nvrtc():
    """The NVRTC library MLX uses (already loaded by its CUDA backend), or None."""
    candidates = list(_NVRTC_NAMES) + sorted(glob.glob(str(_site_packages() / "nvidia" / "*" / "lib" / "libnvrtc.so*")))
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        p, c, s = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        lib.nvrtcCreateProgram.argtypes = [ctypes.POINTER(p), c, c, ctypes.c_int, ctypes.POINTER(c), ctypes.POINTER(c)]
        lib.nvrtcAddNameExpression.argtypes = [p, c]
        lib.nvrtcCompileProgram.argtypes = [p, ctypes.c_int, ctypes.POINTER(c)]
        lib.nvrtcGetProgramLogSize.argtypes = [p, ctypes.POINTER(s)]
        lib.nvrtcGetProgramLog.argtypes = [p, ctypes.c_char_p]
        lib.nvrtcGetLoweredName.argtypes = [p, c, ctypes.POINTER(c)]
        lib.nvrtcGetCUBINSize.argtypes = [p, ctypes.POINTER(s)]
        lib.nvrtcGetCUBIN.argtypes = [p, ctypes.c_char_p]
        lib.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(p)]
        return lib
    log.warning("NVRTC not found (%s): mlx-hands' own GPU kernels are off", ", ".join(_NVRTC_NAMES))
    return None


@functools.cache
def _version() -> str:
    major, minor = ctypes.c_int(), ctypes.c_int()
    _nvrtc().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


@functools.cache
def arch() -> str:
    """The GPU's target as MLX compiles for it: sm_XY, with the architecture-specific 'a' from Hopper on."""
    cuda = ctypes.CDLL("libcuda.so.1")
    dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    # cuInit may be called any number of times; no MLX evaluation here (this can run inside an mx.compile trace)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(dev), 0) != 0:
        raise NVRTCError("cuDeviceGet failed")
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)
    return f"sm_{major.value}{minor.value}" + ("a" if major.value >= 9 else "")


@functools.cache
def _include_paths() -> tuple[str, ...]:
    """Where cuda_fp16.h and cuda_bf16.h are, looked for as MLX does (jit_module.cpp): the CUDA wheels beside MLX,
    else CUDA_HOME / CUDA_PATH, else /usr/local/cuda."""
    paths = sorted(glob.glob(str(_site_packages() / "nvidia" / "cu*" / "include")))
    paths += sorted(glob.glob(str(_site_packages() / "nvidia" / "cuda_runtime" / "include")))
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    paths.append(str(Path(home) / "include"))
    return tuple(p for p in paths if Path(p, "cuda_bf16.h").is_file())


@functools.cache
def available() -> bool:
    """True when our kernels can be built here (NVRTC found, a CUDA device present)."""
    try:
        return _nvrtc() is not None and bool(arch())
    except (OSError, NVRTCError) as e:
        log.warning("mlx-hands' own GPU kernels are off: %s", e)
        return False


def _compile(source: str, name: str) -> tuple[bytes, str]:
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"mlx_hands.cu", 0, None, None) != 0:
        raise NVRTCError("nvrtcCreateProgram failed")
    try:
        lib.nvrtcAddNameExpression(prog, name.encode())
        opts = [f"--gpu-architecture={arch()}".encode(), b"-std=c++17"]
        opts += [f"--include-path={p}".encode() for p in _include_paths()]
        rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        if rc != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            text = ctypes.create_string_buffer(size.value + 1)
            lib.nvrtcGetProgramLog(prog, text)
            raise NVRTCError(f"compiling {name} failed: {text.value.decode(errors='replace')[:4000]}")
        lowered = ctypes.c_char_p()
        lib.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(lowered))
        size = ctypes.c_size_t()
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        cubin = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetCUBIN(prog, cubin)
        return cubin.raw, lowered.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _write(path: Path, data: bytes) -> None:
    """Whole files only: another process reads either nothing or all of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.cache
def build(source: str, name: str) -> tuple[bytes, str]:
    """(cubin, lowered kernel name) of the kernel `name` (a name expression, e.g. "gelu<float>") in `source`, for
    this GPU: from the disk cache, or compiled now and stored there."""
    key = hashlib.sha1(f"{source}\0{name}\0{arch()}\0{_version()}".encode()).hexdigest()[:24]
    folder = kernel_cache_dir() / "mlx-hands"
    cubin_path, name_path = folder / f"{key}.cubin", folder / f"{key}.json"
    with _lock:
        try:
            return cubin_path.read_bytes(), json.loads(name_path.read_text())["lowered"]
        except (OSError, ValueError, KeyError):
            pass
        cubin, lowered = _compile(source, name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write(name_path, json.dumps({"name": name, "lowered": lowered, "arch": arch()}).encode())
            _write(cubin_path, cubin)  # last: its presence means both are whole
        except OSError as e:  # a read-only cache still runs, compiling in every process
            log.debug("could not store kernel %s in %s: %s", name, folder, e)
        return cubin, lowered


def launch(source: str, name: str, inputs, *, scalars=(), grid, threadgroup, output_shapes, output_dtypes):
    """Run kernel `name` of `source` (built by build()) on MLX arrays; scalars are int32 values passed by value after
    the inputs' and outputs' pointers (floats through float_bits). Inputs are made row-contiguous first."""
    cubin, lowered = build(source, name)
    return mx.fast.precompiled_cuda_kernel(
        name=lowered, compiled_source=cubin, inputs=inputs, output_shapes=output_shapes, output_dtypes=output_dtypes,
        scalars=list(scalars), grid=grid, threadgroup=threadgroup, ensure_row_contiguous=True)


def split64(value: int) -> tuple[int, int]:
    """A 64-bit value as two int32 kernel scalars (low, high) (precompiled kernels take 32-bit ints); the kernel
    joins them with JOIN64 (in HEADER)."""
    lo, hi = value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF
    return lo - (1 << 32) if lo >= 1 << 31 else lo, hi - (1 << 32) if hi >= 1 << 31 else hi


def float_bits(value: float) -> int:
    """A float32 as the int32 of its bits: MLX 0.32.4's precompiled_cuda_kernel refuses Python floats as scalars
    ("Received float but must be one of bool, int or float"); the kernel reads it with __int_as_float."""
    return int(np.array(value, np.float32).view(np.int32))


HEADER = r"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>
typedef unsigned long long u64;
#define JOIN64(lo, hi) ((u64)(unsigned)(lo) | ((u64)(unsigned)(hi) << 32))
"""

CUDA_TYPES = {mx.float32: "float", mx.float16: "__half", mx.bfloat16: "__nv_bfloat16"}
