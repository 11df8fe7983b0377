"""MLX's CPU matrix products on Linux: use the system's OpenBLAS when there is one.

The Linux `mlx` wheel ships the netlib reference BLAS (mlx_cpu.libs/libblas-*.so), whose GEMM is one to
two orders of magnitude slower than OpenBLAS. libmlx resolves `cblas_sgemm` (and the LAPACK routines) at
load time through the global symbol scope first, so a library loaded with RTLD_GLOBAL *before* mlx.core
is imported wins, as LD_PRELOAD would, without restarting the process or setting variables.
`use_system_blas()` does that (the CLI calls it first); `check_cpu_blas()` measures what MLX got.

OpenBLAS rather than another BLAS: on a 2-core Zen 4 at ViT-H's shapes (M = 210) Debian's OpenBLAS 0.3.21 ran a
block's four products in 48-49 ms, Intel MKL 2026.2 (PyPI, libmkl_rt preloaded the same way) in 53-67 ms and
Debian's BLIS 0.9 in 78-94 ms (BENCHMARKS.md, CPU, fourth session).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Where distributions put a CBLAS-exporting OpenBLAS (Debian/Ubuntu alternatives, Fedora/RHEL, Arch)
_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

FIX = ("install OpenBLAS (Debian/Ubuntu: apt install libopenblas0-pthread; Fedora: dnf install openblas) and "
       "run through the mlx-hands command, or start Python with "
       "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 (your OpenBLAS path)")


def find_openblas() -> str | None:
    """Path or soname of a system OpenBLAS exporting cblas_sgemm, or None."""
    names = [ctypes.util.find_library("openblas")] + [p for p in _CANDIDATES if Path(p).exists()]
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(lib, "cblas_sgemm"):
            return name
    return None


def use_system_blas() -> str | None:
    """On Linux, load a system OpenBLAS globally so that MLX (imported afterwards) computes with it.

    Returns what was loaded, or None: not Linux, no OpenBLAS found, or mlx.core already imported (then
    it is too late: its BLAS symbols are bound). Harmless with MLX builds that bring a fast BLAS.
    """
    if not sys.platform.startswith("linux"):
        return None
    if "mlx.core" in sys.modules:
        log.debug("mlx.core is already imported; its BLAS stays as it is")
        return None
    name = find_openblas()
    if name is None:
        return None
    ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
    log.debug("loaded %s for MLX's CPU matrix products", name)
    return name


def cpu_gemm_gflops(n: int = 512, repeats: int = 3) -> float:
    """Float32 n x n x n matrix products per second on MLX's CPU stream, in GFLOP/s (best of repeats)."""
    import mlx.core as mx  # here, not at the top: this module must be importable before MLX (use_system_blas)

    with mx.stream(mx.cpu):
        a = mx.random.normal((n, n))
        b = mx.random.normal((n, n))
        mx.eval(a, b, a @ b)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            mx.eval(a @ b)
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def check_cpu_blas(min_gflops: float = 20.0) -> float:
    """Measure MLX's CPU GEMM once (a few ms) and log a warning with the fix when it is the reference BLAS
    (about 5-10 GFLOP/s; OpenBLAS gives 50-200+ on a few cores). Returns the GFLOP/s measured."""
    gflops = cpu_gemm_gflops()
    if gflops < min_gflops:
        log.warning("MLX's CPU matrix products run at %.1f GFLOP/s: this mlx build uses the slow reference BLAS. "
                    "To make the CPU path 10-30x faster, %s.", gflops, FIX)
    return gflops
