"""Host arrays onto the GPU without page faults.

On MLX's CUDA backend an array made from numpy lives in CUDA managed memory, and the first kernel that
reads it pulls the pages over one fault at a time: ~2.6 GB/s measured on an H100, 4.8 ms for a batch of 64
uint8 crops (BENCHMARKS.md). `to_device` avoids that on CUDA, in order of preference:

* "staged": the bytes are copied into a pinned, device-mapped host buffer (allocated once, grown as needed),
  and a small kernel (`mx.fast.cuda_kernel`) reads them over the bus into a fresh device array. The kernel is
  launched at once (it runs while the caller builds its graph); the next call waits for it before it
  refills the buffer.
* "prefetch": `mx.array`, then the driver is asked to migrate the managed pages ahead of the first kernel
  (`cuMemPrefetchAsync`); measured ~3 GB/s, so it only saves the fault overhead.
* "plain": `mx.array`.

`from_device` brings outputs back the same way on CUDA: one kernel writes them into a second pinned buffer.
When the host reads an MLX buffer itself, MLX moves it to managed memory and its cache later hands it out
for kernel outputs, whose writes then fault the pages back (~0.5 ms per copy kernel measured at b = 64).

Values never change: the modes differ only in how bytes travel. Elsewhere (Metal's unified memory, the CPU)
it is always plain `mx.array`. The mode is an argument (`to_device(a, mode=...)`), or `with using("plain"):` for
a block of code, else MLX_HANDS_TRANSFER (mlx_hands.settings); default staged, falling back to prefetch when the
driver refuses a pinned buffer.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import numpy as np

from .models import nvrtc
from .settings import TRANSFER_MODES, transfer_mode

log = logging.getLogger(__name__)

MODES = TRANSFER_MODES
_mode: contextvars.ContextVar[str | None] = contextvars.ContextVar("mlx_hands_transfer_mode", default=None)
MIN_BYTES = 1 << 16  # below this a fault or two costs less than the detour
COPY_THREADS = min(4, os.cpu_count() or 1)  # host threads filling the pinned buffer, for large inputs
_THREADED_BYTES = 1 << 22
_VEC = 16  # the copy kernel moves 16-byte words

_driver = None  # None: not looked up yet; False: unavailable
_staging_failed = False  # the driver refused a pinned buffer once: staged falls back to prefetch from then on


def current_mode(mode: str | None = None) -> str:
    """The transfer mode in force: `mode` if given, else the innermost `using(...)`, else MLX_HANDS_TRANSFER."""
    mode = mode or _mode.get() or transfer_mode()
    if mode not in MODES:
        raise ValueError(f"transfer mode must be one of {', '.join(MODES)}, got {mode!r}")
    return "prefetch" if mode == "staged" and _staging_failed else mode


@contextlib.contextmanager
def using(mode: str):
    """`with using("plain"): ...` runs a block with another transfer mode, then restores the previous one."""
    if mode not in MODES:
        raise ValueError(f"transfer mode must be one of {', '.join(MODES)}, got {mode!r}")
    token = _mode.set(mode)
    try:
        yield
    finally:
        _mode.reset(token)


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


def cpu_device() -> bool:
    """True when MLX computes on the CPU by default."""
    return mx.default_device().type == mx.DeviceType.cpu


def device_name() -> str:
    """The MLX device work runs on, e.g. 'gpu (NVIDIA H200)' or 'cpu'."""
    dev = mx.default_device()
    try:
        name = mx.device_info().get("device_name", "")
    except Exception:  # older MLX without device_info
        name = ""
    return f"{dev.type.name} ({name})" if name else dev.type.name


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


class _Pinned:
    """A pinned, device-mapped host buffer (cuMemHostAlloc), grown on demand: .view holds its bytes on the
    host, .dev is its address for kernels."""

    def __init__(self, driver: _Driver):
        self.driver, self.size, self.host, self.dev, self.view = driver, 0, None, 0, None

    def reserve(self, nbytes: int) -> bool:
        """Make room for nbytes; True when the buffer moved (kernels that bake its address must be rebuilt)."""
        if nbytes <= self.size:
            return False
        size = max(nbytes, 2 * self.size, 1 << 22)
        ptr = ctypes.c_void_p()
        if self.driver.host_alloc(ctypes.byref(ptr), size, 0x02) != 0:  # CU_MEMHOSTALLOC_DEVICEMAP
            raise OSError(f"cuMemHostAlloc({size}) failed")
        dev = ctypes.c_uint64()
        if self.driver.host_device_ptr(ctypes.byref(dev), ptr, 0) != 0:
            self.driver.host_free(ptr)
            raise OSError("cuMemHostGetDevicePointer failed")
        if self.host is not None:
            self.driver.host_free(self.host)  # no kernel uses it any more: every copy is waited for
        self.host, self.size, self.dev = ptr, size, dev.value
        self.view = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(ptr.value))
        return True


_BLOCK = 4096  # bytes per block of the input copy (256 threads x 16 bytes)


class _Staging:
    """Host <-> GPU copies through pinned buffers, read and written by small kernels, so that no MLX buffer is
    ever touched by the host. (MLX moves a buffer the host reads into managed memory and later hands it out
    again from its cache for kernel outputs; the kernel writing it then pulls the pages back one fault at a
    time: ~0.5 ms per output copy measured at b = 64.)"""

    def __init__(self, driver: _Driver):
        self.lock = threading.Lock()
        self.inp, self.out = _Pinned(driver), _Pinned(driver)
        self.pending = None  # the last input copy, launched but perhaps not finished
        self.pool, self.pool_size = None, 0
        self.token = mx.zeros((1,), mx.uint8)  # a kernel input that is never read (see __call__)
        mx.eval(self.token)

    def _fill(self, a: np.ndarray) -> None:
        """Copy a (any strides) into the pinned buffer, row-major; large inputs in slices over
        a few threads (numpy releases the GIL while it copies)."""
        dst = self.inp.view[: a.nbytes].view(a.dtype).reshape(a.shape)
        k = min(COPY_THREADS, len(a)) if a.ndim and a.nbytes >= _THREADED_BYTES else 1
        if k <= 1:
            np.copyto(dst, a)
            return
        if self.pool_size != k:
            self.pool, self.pool_size = ThreadPoolExecutor(k, thread_name_prefix="mlx_hands_stage"), k
        cuts = [len(a) * i // k for i in range(k + 1)]
        list(self.pool.map(lambda i: np.copyto(dst[cuts[i] : cuts[i + 1]], a[cuts[i] : cuts[i + 1]]), range(k)))

    def __call__(self, a: np.ndarray) -> mx.array:
        with self.lock:
            if self.pending is not None:
                mx.eval(self.pending)  # the previous copy has read the buffer before it is refilled
                self.pending = None
            # one 16-byte word per thread, in whole blocks: the copy covers a.nbytes rounded up to _BLOCK
            # bytes (the kernel needs no count, whose every read would cross the bus), and the result is
            # a view of its first a.nbytes
            padded = -(-a.nbytes // _BLOCK) * _BLOCK
            self.inp.reserve(padded)
            self._fill(a)
            dtype = _STAGED_DTYPES[a.dtype]
            (out,) = nvrtc.launch(_STAGED_IN, "staged_in", [self.token], scalars=nvrtc.split64(self.inp.dev),
                                  grid=(padded // _VEC, 1, 1), threadgroup=(_BLOCK // _VEC, 1, 1),
                                  output_shapes=[(padded // a.itemsize,)], output_dtypes=[dtype])
            out = out[: a.size].reshape(a.shape)
            # launched now, so that it runs while the caller builds its graph; the next call waits for it
            mx.async_eval(out)
            self.pending = out
            return out

    def read(self, arrays: list[mx.array]) -> np.ndarray:
        """float32 vectors on the device -> one numpy vector (them, one after another), written into the pinned
        output buffer by one kernel."""
        n = sum(a.size for a in arrays)
        k = len(arrays)
        with self.lock:
            self.out.reserve(4 * n)
            threads = min(-(-max(a.size for a in arrays) // 256) * 256, 1 << 16)  # the kernel strides
            (done,) = nvrtc.launch(_staged_out_source(k), "staged_out", arrays,
                                   scalars=[*nvrtc.split64(self.out.dev), *(a.size for a in arrays)],
                                   grid=(threads, 1, 1), threadgroup=(256, 1, 1), output_shapes=[(1,)],
                                   output_dtypes=[mx.uint8])  # never written
            mx.eval(done)
            return self.out.view[: 4 * n].view(np.float32).copy()


# the pinned buffer's device address comes as two int32 halves (its host side is refilled before each launch)
_STAGED_IN = nvrtc.HEADER + """
__global__ void staged_in(const unsigned char* token, uint4* out, int lo, int hi) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  out[i] = reinterpret_cast<const uint4*>(JOIN64(lo, hi))[i];
}
"""


def _staged_out_source(k: int) -> str:
    """The kernel that writes k float32 vectors one after another into the pinned output buffer."""
    args = ", ".join(f"const float* a{i}" for i in range(k))
    sizes = ", ".join(f"int n{i}" for i in range(k))
    body = "".join(f"""
  for (u64 j = start; j < (u64)n{i}; j += step) dst[off + j] = a{i}[j];
  off += n{i};""" for i in range(k))
    return nvrtc.HEADER + f"""
__global__ void staged_out({args}, unsigned char* done, int lo, int hi, {sizes}) {{
  float* dst = reinterpret_cast<float*>(JOIN64(lo, hi));
  const u64 start = blockIdx.x * (u64)blockDim.x + threadIdx.x;
  const u64 step = (u64)gridDim.x * blockDim.x;
  u64 off = 0;{body}
}}
"""


_staging = None
_STAGED_DTYPES = {np.dtype(np.uint8): mx.uint8, np.dtype(np.float32): mx.float32}


def _prefetch(driver: _Driver, x: mx.array) -> None:
    mx.eval(x)
    view = np.asarray(memoryview(x))  # the array's own buffer (no copy)
    where = _CUmemLocation(1, 0)  # CU_MEM_LOCATION_TYPE_DEVICE, device 0
    if driver.prefetch(view.ctypes.data, x.nbytes, where, 0, None) != 0:
        log.debug("prefetch of %d bytes refused", x.nbytes)


def _get_staging(mode: str) -> _Staging | None:
    """The pinned-buffer copier when MLX runs on CUDA and mode is "staged"; None otherwise (or if the driver
    refuses: then staged falls back to "prefetch" for good, with a warning)."""
    global _staging
    if mode != "staged":
        return None
    if _staging is None:
        driver = _get_driver()
        if not driver:
            return None
        try:
            mx.eval(mx.zeros(1))  # MLX makes its CUDA context current on this thread
            if not driver.has_context():
                raise OSError("no CUDA context on this thread")
            _staging = _Staging(driver)
        except (OSError, RuntimeError, ValueError) as e:
            _give_up_staging(e)
            return None
    return _staging


def _give_up_staging(error: Exception) -> None:
    global _staging_failed
    log.warning("staged host<->GPU copies unavailable (%s); using managed memory from now on", error)
    _staging_failed = True


def to_device(a: np.ndarray, mode: str | None = None) -> mx.array:
    """mx.array(a), moved to the GPU without page faults on MLX's CUDA backend (module docstring).

    a may be a strided view (say the columns of a crop batch that a network reads): the staged copy gathers
    it straight into the pinned buffer; the other paths make it contiguous first.
    """
    mode = current_mode(mode)
    a = np.asarray(a)
    if a.nbytes < MIN_BYTES or mode == "plain":
        return mx.array(np.ascontiguousarray(a))
    if a.dtype in _STAGED_DTYPES:
        staging = _get_staging(mode)
        if staging is not None:
            try:
                return staging(a)
            except OSError as e:  # a pinned buffer could not grow
                _give_up_staging(e)
    driver = _get_driver()
    x = mx.array(np.ascontiguousarray(a))
    if current_mode(mode) == "prefetch" and driver and driver.prefetch is not None and driver.has_context():
        _prefetch(driver, x)
    return x


def from_device(arrays: dict[str, mx.array], mode: str | None = None) -> dict[str, np.ndarray]:
    """Several MLX arrays -> numpy in one device -> host copy: the float ones are joined (as float32) into one
    buffer on the device and split on the host. Each separate conversion costs a synchronised copy; for a
    model's handful of small outputs that overhead, not the bytes, is the cost. On CUDA ("staged") the copy
    goes through a pinned buffer, so the host never touches an MLX buffer (see _Staging)."""
    floats = {k: v for k, v in arrays.items() if mx.issubdtype(v.dtype, mx.floating)}
    out = {k: np.array(v) for k, v in arrays.items() if k not in floats}
    if floats:
        parts = [v.astype(mx.float32).reshape(-1) for v in floats.values()]
        staging = _get_staging(current_mode(mode)) if all(p.size for p in parts) else None
        flat = None
        if staging is not None:
            try:
                flat = staging.read(parts)
            except OSError as e:
                _give_up_staging(e)
        if flat is None:
            flat = np.array(mx.concatenate(parts) if len(parts) > 1 else parts[0])
        i = 0
        for k, v in floats.items():
            out[k] = flat[i : i + v.size].reshape(v.shape)
            i += v.size
    return {k: out[k] for k in arrays}
