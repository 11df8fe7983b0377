"""Probe: compile one of our kernels with NVRTC ourselves (ctypes) to a cubin and run it through
mx.fast.precompiled_cuda_kernel, against the same kernel through mx.fast.cuda_kernel (which MLX compiles again in
every process: its custom kernels skip the disk cache). Prints compile times and the largest difference.

    python benchmarks/nvrtc_probe.py
"""

from __future__ import annotations

import ctypes
import glob
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx.core as mx

SRC = r"""
#include <cuda_bf16.h>
#include <cuda_fp16.h>
template <typename T, int V> struct alignas(sizeof(T) * V) Pack { T v[V]; };
__device__ __forceinline__ float gelu_f(float v) { return v * (1.f + erff(v / 1.41421356237309515f)) / 2.f; }
template <typename T>
__global__ void probe_gelu(const T* x, T* out, int n) {
  constexpr int V = 16 / sizeof(T);
  using P = Pack<T, V>;
  const int start = blockIdx.x * blockDim.x + threadIdx.x, step = gridDim.x * blockDim.x;
  for (int p = start; p < n / V; p += step) {
    P a = reinterpret_cast<const P*>(x)[p];
    #pragma unroll
    for (int k = 0; k < V; ++k) a.v[k] = static_cast<T>(gelu_f(static_cast<float>(a.v[k])));
    reinterpret_cast<P*>(out)[p] = a;
  }
}
"""


def main():
    mx.eval(mx.ones(1) + 1)
    cands = glob.glob(str(Path(mx.__file__).parents[1] / "nvidia" / "*" / "lib" / "libnvrtc.so*"))
    print("nvrtc candidates", cands)
    lib = None
    for name in ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", *cands]:
        try:
            lib = ctypes.CDLL(name)
            print("loaded", name)
            break
        except OSError as e:
            print("no", name, e)
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    print("nvrtc", major.value, minor.value)
    cuda = ctypes.CDLL("libcuda.so.1")
    dev = ctypes.c_int()
    cuda.cuDeviceGet(ctypes.byref(dev), 0)
    cc = [ctypes.c_int(), ctypes.c_int()]
    cuda.cuDeviceGetAttribute(ctypes.byref(cc[0]), 75, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(cc[1]), 76, dev)
    arch = f"sm_{cc[0].value}{cc[1].value}" + ("a" if cc[0].value >= 9 else "")
    incs = [str(p) for p in Path(mx.__file__).parents[1].glob("nvidia/*/include")] + ["/usr/local/cuda/include"]
    print("arch", arch, "includes", incs)
    t = time.perf_counter()
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), SRC.encode(), b"probe.cu", 0, None, None) == 0
    expr = b"probe_gelu<__nv_bfloat16>"
    lib.nvrtcAddNameExpression(prog, expr)
    opts = [f"--gpu-architecture={arch}".encode(), b"-std=c++17"] + [f"--include-path={i}".encode() for i in incs]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    print("compile rc", rc, "log", log.value.decode()[:2000])
    lowered = ctypes.c_char_p()
    lib.nvrtcGetLoweredName(prog, expr, ctypes.byref(lowered))
    lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
    cubin = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetCUBIN(prog, cubin)
    dt = time.perf_counter() - t
    print(f"own NVRTC compile {dt:.3f} s, cubin {size.value} bytes, name {lowered.value}")
    x = mx.random.normal((193, 5120)).astype(mx.bfloat16)
    t = time.perf_counter()
    (y,) = mx.fast.precompiled_cuda_kernel(
        name=lowered.value.decode(), compiled_source=bytes(cubin.raw), inputs=[x], output_shapes=[x.shape],
        output_dtypes=[x.dtype], scalars=[x.size], grid=(256 * 132, 1, 1), threadgroup=(256, 1, 1))
    mx.eval(y)
    print(f"precompiled first call {time.perf_counter() - t:.3f} s")
    from mlx_hands.models import kernels

    t = time.perf_counter()
    z = kernels.gelu(x)
    mx.eval(z)
    print(f"mx.fast.cuda_kernel gelu first call (NVRTC inside MLX) {time.perf_counter() - t:.3f} s")
    t = time.perf_counter()
    w = kernels.add_layer_norm(x, x, mx.ones(5120, mx.bfloat16), mx.zeros(5120, mx.bfloat16), 1e-6)
    mx.eval(w)
    print(f"mx.fast.cuda_kernel add_layer_norm first call {time.perf_counter() - t:.3f} s")
    print("max diff", float(mx.abs(y.astype(mx.float32) - z.astype(mx.float32)).max()))


if __name__ == "__main__":
    main()
