"""Host arrays onto the GPU without page faults.

On MLX's CUDA backend an array made from numpy lives in CUDA managed memory, and the first kernel that
reads it pulls the pages over one fault at a time: ~2.6 GB/s measured on an H100, 4.8 ms for a batch of 64
uint8 crops (BENCHMARKS.md). `to_device` avoids that on CUDA, in order of preference:

* "staged": the bytes are copied into a pinned, device-mapped host buffer (allocated once, grown as needed),
  and a small kernel (`mx.fast.cuda_kernel`) reads them over the bus into a fresh device array. The call
  waits for that kernel, so the buffer can be reused by the next call.
* "prefetch": `mx.array`, then the driver is asked to migrate the managed pages ahead of the first kernel
  (`cuMemPrefetchAsync`); measured ~3 GB/s, so it only saves the fault overhead.
* "plain": `mx.array`.

Values never change: the modes differ only in how bytes travel. Elsewhere (Metal's unified memory, the CPU)
it is always plain `mx.array`. MLX_HANDS_TRANSFER=staged|prefetch|plain picks a mode (default staged, falling
back to the next when the driver lacks a call).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

import mlx.core as mx
import numpy as np

log = logging.getLogger(__name__)

MODES = ("staged", "prefetch", "plain")
MODE = os.environ.get("MLX_HANDS_TRANSFER", "staged")  # may be changed at run time (benchmarks A/B)
if MODE not in MODES:
    raise ValueError(f"MLX_HANDS_TRANSFER must be one of {MODES}, got {MODE!r}")
MIN_BYTES = 1 << 16  # below this a fault or two costs less than the detour
_VEC = 16  # the copy kernel moves 16-byte words

_driver = None  # None: not looked up yet; False: unavailable


class _CUmemLocation(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _Driver:
    """The few CUDA driver calls used here, through libcuda (always present where MLX runs on CUDA)."""

    def __init__(self):
        cuda = ctypes.CDLL("libcuda.so.1")
        self.ctx_get_current = cuda.cuCtxGetCurrent
        self.ctx_get_current.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.host_alloc = cuda.cuMemHostAlloc
        self.host_alloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_uint]
        self.host_free = cuda.cuMemFreeHost
        self.host_free.argtypes = [ctypes.c_void_p]
        self.host_device_ptr = cuda.cuMemHostGetDevicePointer_v2
        self.host_device_ptr.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p, ctypes.c_uint]
        try:
            self.prefetch = cuda.cuMemPrefetchAsync_v2  # CUDA >= 12.2 drivers
            self.prefetch.argtypes = [ctypes.c_uint64, ctypes.c_size_t, _CUmemLocation, ctypes.c_uint,
                                      ctypes.c_void_p]
        except AttributeError:
            self.prefetch = None

    def has_context(self) -> bool:
        ctx = ctypes.c_void_p()
        return self.ctx_get_current(ctypes.byref(ctx)) == 0 and bool(ctx.value)


def _get_driver():
    global _driver
    if _driver is None:
        _driver = False
        if mx.default_device().type == mx.DeviceType.gpu and mx.cuda.is_available():
            try:
                _driver = _Driver()
            except (OSError, AttributeError) as e:
                log.debug("CUDA driver calls unavailable (%s): host inputs migrate on first touch", e)
    return _driver


class _Staging:
    """One pinned, device-mapped host buffer and the kernel that copies out of it."""

    def __init__(self, driver: _Driver):
        self.driver, self.size, self.host, self.kernel = driver, 0, None, None
        self.lock = threading.Lock()

    def _grow(self, nbytes: int) -> None:
        size = max(nbytes, 2 * self.size, 1 << 22)
        ptr = ctypes.c_void_p()
        if self.driver.host_alloc(ctypes.byref(ptr), size, 0x02) != 0:  # CU_MEMHOSTALLOC_DEVICEMAP
            raise OSError(f"cuMemHostAlloc({size}) failed")
        dev = ctypes.c_uint64()
        if self.driver.host_device_ptr(ctypes.byref(dev), ptr, 0) != 0:
            self.driver.host_free(ptr)
            raise OSError("cuMemHostGetDevicePointer failed")
        if self.host is not None:
            self.driver.host_free(self.host)  # the previous copy kernel has finished (to_device waits)
        self.host, self.size = ptr, size
        self.view = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(ptr.value))
        self.kernel = mx.fast.cuda_kernel(
            name=f"mlx_hands_staged_copy_{dev.value:x}", input_names=["n"], output_names=["out"],
            source=f"""
    const uint4* src = reinterpret_cast<const uint4*>({dev.value}ULL);
    uint4* dst = reinterpret_cast<uint4*>(out);
    const unsigned long long count = n[0];
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < count;
         i += (unsigned long long)gridDim.x * blockDim.x) {{
        dst[i] = src[i];
    }}
""")

    def __call__(self, a: np.ndarray) -> mx.array:
        with self.lock:
            if a.nbytes > self.size:
                self._grow(a.nbytes)
            flat = a.reshape(-1).view(np.uint8)
            self.view[: a.nbytes] = flat
            words = a.nbytes // _VEC
            threads = min(-(-words // 256) * 256, 1 << 18)  # whole blocks of 256; the kernel strides
            (out,) = self.kernel(inputs=[mx.array([words], dtype=mx.uint64)], grid=(threads, 1, 1),
                                 threadgroup=(256, 1, 1), output_shapes=[a.shape],
                                 output_dtypes=[_STAGED_DTYPES[a.dtype]])
            mx.eval(out)  # the buffer is reused by the next call
            return out


_staging = None
_STAGED_DTYPES = {np.dtype(np.uint8): mx.uint8, np.dtype(np.float32): mx.float32}


def _prefetch(driver: _Driver, x: mx.array) -> None:
    mx.eval(x)
    view = np.asarray(memoryview(x))  # the array's own buffer (no copy)
    where = _CUmemLocation(1, 0)  # CU_MEM_LOCATION_TYPE_DEVICE, device 0
    if driver.prefetch(view.ctypes.data, x.nbytes, where, 0, None) != 0:
        log.debug("prefetch of %d bytes refused", x.nbytes)


def to_device(a: np.ndarray) -> mx.array:
    """mx.array(a), moved to the GPU without page faults on MLX's CUDA backend (module docstring)."""
    global _staging, MODE
    a = np.ascontiguousarray(a)
    if a.nbytes < MIN_BYTES or MODE == "plain":
        return mx.array(a)
    driver = _get_driver()
    if not driver:
        return mx.array(a)
    if MODE == "staged" and a.nbytes % _VEC == 0 and a.dtype in _STAGED_DTYPES:
        try:
            if _staging is None:
                mx.eval(mx.zeros(1))  # MLX makes its CUDA context current on this thread
                if not driver.has_context():
                    raise OSError("no CUDA context on this thread")
                _staging = _Staging(driver)
            return _staging(a)
        except (OSError, RuntimeError, ValueError) as e:
            log.warning("staged host->GPU copy unavailable (%s); using managed memory", e)
            MODE = "prefetch"
    x = mx.array(a)
    if MODE == "prefetch" and driver.prefetch is not None and driver.has_context():
        _prefetch(driver, x)
    return x


def from_device(arrays: dict[str, mx.array]) -> dict[str, np.ndarray]:
    """Several MLX arrays -> numpy in one device -> host copy: the float ones are joined (as float32) into one
    buffer on the device and split on the host. Each separate conversion costs a synchronised copy through
    managed memory; for a model's handful of small outputs that overhead, not the bytes, is the cost."""
    floats = {k: v for k, v in arrays.items() if mx.issubdtype(v.dtype, mx.floating)}
    out = {k: np.array(v) for k, v in arrays.items() if k not in floats}
    if len(floats) == 1:
        (k, v), = floats.items()
        out[k] = np.array(v.astype(mx.float32))
    elif floats:
        flat = np.array(mx.concatenate([v.astype(mx.float32).reshape(-1) for v in floats.values()]))
        i = 0
        for k, v in floats.items():
            out[k] = flat[i : i + v.size].reshape(v.shape)
            i += v.size
    return {k: out[k] for k in arrays}
