"""Hand-written GPU kernels, each with a portable fallback made of ordinary MLX ops.

Used only where a measurement showed it pays (BENCHMARKS.md): the residual add + LayerNorm pair of every
transformer block, which MLX runs as two kernels (an elementwise add, then its layer_norm) and which
here is one pass that reads the two inputs once and writes the new residual stream and its normalisation.
"""

from __future__ import annotations

import mlx.core as mx

_TPB = 256  # threads per row

_HEADER = """
template <int TPB>
__device__ float block_sum(float a, float* red) {
  for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffff, a, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = a;
  __syncthreads();
  a = lane < TPB / 32 ? red[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffff, a, o);
  __syncthreads();
  return a;
}
"""

# One block per row. The sum is rounded to T before it is normalised, as the unfused ops would do;
# mean and variance in float32, two passes over registers. EPS is written into the source: a scalar
# input would live in managed memory, and reading it cost a page migration per launch (~16 us).
_SOURCE = """
  constexpr int TPB = 256;
  constexpr int PER = (N + TPB - 1) / TPB;
  __shared__ float red[TPB / 32];
  const int tid = threadIdx.x;
  const size_t base = size_t(blockIdx.x) * N;
  float v[PER];
  float sum = 0.f;
  #pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int c = tid + i * TPB;
    float t = 0.f;
    if (c < N) {
      T r = static_cast<T>(static_cast<float>(x[base + c]) + static_cast<float>(y[base + c]));
      s[base + c] = r;
      t = static_cast<float>(r);
    }
    v[i] = t;
    sum += t;
  }
  const float mean = block_sum<TPB>(sum, red) / N;
  float sq = 0.f;
  #pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int c = tid + i * TPB;
    const float d = c < N ? v[i] - mean : 0.f;
    sq += d * d;
  }
  const float rstd = rsqrtf(block_sum<TPB>(sq, red) / N + EPS);
  #pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int c = tid + i * TPB;
    if (c < N) {
      out[base + c] = static_cast<T>((v[i] - mean) * rstd * static_cast<float>(w[c]) + static_cast<float>(b[c]));
    }
  }
"""


def cuda_kernels_available() -> bool:
    """True when MLX runs on an NVIDIA GPU (the CUDA backend) by default."""
    return mx.default_device().type == mx.DeviceType.gpu and mx.cuda.is_available()


def add_layer_norm(x: mx.array, y: mx.array, weight: mx.array, bias: mx.array, eps: float,
                   fused: bool | None = None) -> tuple[mx.array, mx.array]:
    """s = x + y and LayerNorm(s) over the last axis -> (s, normalised s).

    fused None: the CUDA kernel where MLX runs on CUDA, ordinary ops elsewhere (Metal, CPU).
    """
    if fused is None:
        fused = cuda_kernels_available()
    if not fused or x.dtype != y.dtype or x.shape != y.shape:
        s = x + y
        return s, mx.fast.layer_norm(s, weight, bias, eps)
    n = x.shape[-1]
    rows = x.size // n
    tag = f"{eps:.3e}".replace(".", "p").replace("-", "m").replace("+", "")
    kernel = mx.fast.cuda_kernel(
        name=f"mlx_hands_add_layer_norm_eps{tag}", input_names=["x", "y", "w", "b"], output_names=["s", "out"],
        source=f"  constexpr float EPS = {float(eps)!r}f;\n" + _SOURCE, header=_HEADER,
    )
    s, out = kernel(
        inputs=[x, y, weight.astype(x.dtype), bias.astype(x.dtype)],
        template=[("T", x.dtype), ("N", n)],
        grid=(rows * _TPB, 1, 1), threadgroup=(_TPB, 1, 1),
        output_shapes=[x.shape, x.shape], output_dtypes=[x.dtype, x.dtype],
    )
    return s, out
