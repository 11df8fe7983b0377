"""Host arrays onto the GPU without page faults.

On MLX's CUDA backend an array made from numpy lives in CUDA managed memory, and the first kernel
that reads it pulls the pages over one fault at a time: ~2.6 GB/s measured on an H100, 4.8 ms for a
batch of 64 uint8 crops (BENCHMARKS.md). `to_device` asks the driver to migrate those pages ahead
of time (`cuMemPrefetchAsync`), which moves them with the copy engine at bus speed. The hint does
not change any value: managed memory stays coherent whether or not the prefetch has finished.

Elsewhere (Metal's unified memory, the CPU, a driver without the call) it is plain `mx.array`.
"""

from __future__ import annotations

import ctypes
import logging
import os

import mlx.core as mx
import numpy as np

log = logging.getLogger(__name__)

# below this, a fault or two costs less than the call
MIN_PREFETCH_BYTES = 1 << 16


class _CUmemLocation(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


_CU_MEM_LOCATION_TYPE_DEVICE = 1
_prefetcher = None  # None: not looked up yet; False: unavailable
ENABLED = True  # switch for A/B measurements (benchmarks/interleaved.py); env MLX_HANDS_NO_PREFETCH=1 also


def _find_prefetcher():
    """The driver's cuMemPrefetchAsync_v2 (CUDA >= 12.2 drivers) bound to device 0, or False."""
    if os.environ.get("MLX_HANDS_NO_PREFETCH") or not mx.cuda.is_available():
        return False
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        fn = cuda.cuMemPrefetchAsync_v2
    except (OSError, AttributeError):
        log.debug("cuMemPrefetchAsync_v2 not available: host inputs migrate on first touch")
        return False
    fn.argtypes = [ctypes.c_uint64, ctypes.c_size_t, _CUmemLocation, ctypes.c_uint, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    current = cuda.cuCtxGetCurrent
    current.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    current.restype = ctypes.c_int
    where = _CUmemLocation(_CU_MEM_LOCATION_TYPE_DEVICE, 0)

    def prefetch(ptr: int, size: int) -> bool:
        ctx = ctypes.c_void_p()
        if current(ctypes.byref(ctx)) != 0 or not ctx.value:
            return False  # no CUDA context on this thread (MLX has not touched the GPU from it)
        return fn(ptr, size, where, 0, None) == 0

    return prefetch


def to_device(a: np.ndarray) -> mx.array:
    """mx.array(a), with its pages sent to the GPU ahead of the first kernel that reads them (CUDA)."""
    global _prefetcher
    x = mx.array(a)
    if x.nbytes < MIN_PREFETCH_BYTES or not ENABLED:
        return x
    if _prefetcher is None:
        _prefetcher = _find_prefetcher()
    if _prefetcher:
        mx.eval(x)
        view = np.asarray(memoryview(x))  # the array's own buffer (no copy)
        if not _prefetcher(view.ctypes.data, x.nbytes):
            log.debug("prefetch of %d bytes refused", x.nbytes)
    return x
