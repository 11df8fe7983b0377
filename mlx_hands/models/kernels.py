"""Hand-written GPU kernels, each with a portable fallback made of ordinary MLX ops.

Used only where a measurement showed it pays (BENCHMARKS.md):

* ``add_layer_norm``: the residual add + LayerNorm pair of every transformer block, which MLX runs as two
  kernels; here one pass (a warp per row, 16-byte loads) reads the two inputs once and writes the new
  residual stream and its normalisation.
* ``gelu``: the exact (erf) GELU between the MLP's two matrix products, evaluated in float32 registers and
  rounded once, with 16-byte loads and stores.
* ``sample_max``: RefineNet's bilinear sampling of a feature map at the projected vertices followed by the
  max over vertices, in one kernel; the (B, N, 4, C) corner gather and the (B, N, C) samples are never
  written to memory.
* ``mano``: the whole MANO layer (shape and pose blend shapes, joint regression, kinematic chain,
  skinning, output joint order) for one hand per thread block: one launch where the ops take ~60, which
  at small batches are bound by the host's cost per launch.
* ``rotations``: 6D -> rotation matrix and rotation matrix -> axis-angle, a thread per rotation (the ops
  fuse into ~12 and ~20 small kernels under mx.compile).

The kernels run where MLX runs on CUDA; Metal and the CPU take the fallbacks. Each is a self-contained source
compiled once per GPU architecture and kept on disk (models/nvrtc.py), so a new process does not compile it again. ``with disabled("gelu"):`` (or
"all") turns kernels off for a block of code (A/B benchmarks, debugging); MLX_HANDS_NO_KERNELS=all, or a comma
list of the names above, does it for the whole process (mlx_hands.settings).
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import mlx.core as mx

from ..settings import disabled_kernels
from . import nvrtc
from .nvrtc import CUDA_TYPES, launch

NAMES = ("add_layer_norm", "gelu", "sample_max", "mano", "rotations")
# kernels turned off for the current block of code (`disabled(...)`); None: as MLX_HANDS_NO_KERNELS says
_off: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("mlx_hands_kernels_off", default=None)


def cuda_kernels_available() -> bool:
    """True when MLX runs on an NVIDIA GPU (the CUDA backend) by default."""
    return mx.default_device().type == mx.DeviceType.gpu and mx.cuda.is_available()


@contextlib.contextmanager
def disabled(*names: str):
    """`with disabled("gelu", "mano"):` (or "all") runs a block with those kernels off and the others on,
    whatever MLX_HANDS_NO_KERNELS says; the previous state is restored after the block."""
    unknown = set(names) - set(NAMES) - {"all"}
    if unknown:
        raise ValueError(f"unknown kernel name(s) {sorted(unknown)}; known: all, {', '.join(NAMES)}")
    token = _off.set(frozenset(NAMES) if "all" in names else frozenset(names))
    try:
        yield
    finally:
        _off.reset(token)


def _turned_off() -> frozenset[str]:
    off = _off.get()
    return disabled_kernels(NAMES) if off is None else off


def enabled(name: str, override: bool | None = None) -> bool:
    if override is not None:
        return override
    return name not in _turned_off() and cuda_kernels_available() and nvrtc.available()


def active() -> tuple[str, ...]:
    """The kernels in use now (compiled forwards key their traces on it)."""
    return tuple(n for n in NAMES if enabled(n))


_HEADER = nvrtc.HEADER + """
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

__device__ __forceinline__ float warp_sum(float a) {
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffff, a, o);
  return a;
}

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ULL) == 0;
}

// One row of N: s = round_T(x + y) and LayerNorm(s) * w + b, by one warp, V elements per access.
// Mean and variance in float32, two passes over registers.
template <typename T, int N, int V>
__device__ __forceinline__ void add_ln_row(const T* x, const T* y, const T* w, const T* b, T* s, T* out,
                                           int lane, float eps) {
  using P = Pack<T, V>;
  constexpr int NV = N / V;
  constexpr int PER = (NV + 31) / 32;
  float v[PER][V];
  float sum = 0.f;
  #pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int p = lane + i * 32;
    if (p < NV) {
      const P a = reinterpret_cast<const P*>(x)[p];
      const P c = reinterpret_cast<const P*>(y)[p];
      P r;
      #pragma unroll
      for (int k = 0; k < V; ++k) {
        r.v[k] = static_cast<T>(static_cast<float>(a.v[k]) + static_cast<float>(c.v[k]));
        v[i][k] = static_cast<float>(r.v[k]);
        sum += v[i][k];
      }
      reinterpret_cast<P*>(s)[p] = r;
    } else {
      #pragma unroll
      for (int k = 0; k < V; ++k) v[i][k] = 0.f;
    }
  }
  const float mean = warp_sum(sum) / N;
  float sq = 0.f;
  #pragma unroll
  for (int i = 0; i < PER; ++i) {
    if (lane + i * 32 < NV) {
      #pragma unroll
      for (int k = 0; k < V; ++k) {
        const float d = v[i][k] - mean;
        sq += d * d;
      }
    }
  }
  const float rstd = rsqrtf(warp_sum(sq) / N + eps);
  #pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int p = lane + i * 32;
    if (p < NV) {
      const P wp = reinterpret_cast<const P*>(w)[p];
      const P bp = reinterpret_cast<const P*>(b)[p];
      P o;
      #pragma unroll
      for (int k = 0; k < V; ++k) {
        o.v[k] = static_cast<T>((v[i][k] - mean) * rstd * static_cast<float>(wp.v[k]) + static_cast<float>(bp.v[k]));
      }
      reinterpret_cast<P*>(out)[p] = o;
    }
  }
}

// Exact GELU as mlx.nn.gelu writes it, in float32.
__device__ __forceinline__ float gelu_f(float v) {
  return v * (1.f + erff(v / 1.41421356237309515f)) / 2.f;
}
"""

# x, y, out, s: (rows, N). A warp per row; 16-byte accesses when every pointer allows them (fresh MLX
# buffers always do), one element per access otherwise. eps is a by-value kernel argument (its float32 bits: MLX
# 0.32.4's precompiled kernels refuse Python floats): as an array input it would live in managed memory, and
# reading it cost a page migration per launch (~16 us).
_ADD_LN = _HEADER + """
template <typename T, int N>
__global__ void add_ln(const T* x, const T* y, const T* w, const T* b, T* s, T* out, int rows, int eps_bits) {
  const float eps = __int_as_float(eps_bits);
  const int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const size_t off = size_t(row) * N;
  constexpr int V = 16 / sizeof(T);
  if (N % V == 0 && aligned16(x) && aligned16(y) && aligned16(w) && aligned16(b) && aligned16(s) && aligned16(out)) {
    add_ln_row<T, N, (N % V == 0 ? V : 1)>(x + off, y + off, w, b, s + off, out + off, lane, eps);
  } else {
    add_ln_row<T, N, 1>(x + off, y + off, w, b, s + off, out + off, lane, eps);
  }
}
"""

_ROWS_PER_BLOCK = 8


def add_layer_norm(x: mx.array, y: mx.array, weight: mx.array, bias: mx.array, eps: float,
                   fused: bool | None = None) -> tuple[mx.array, mx.array]:
    """s = x + y and LayerNorm(s) over the last axis -> (s, normalised s).

    fused None: the CUDA kernel where MLX runs on CUDA (unless disabled), ordinary ops elsewhere.
    """
    if (not enabled("add_layer_norm", fused) or x.dtype != y.dtype or x.shape != y.shape
            or x.dtype not in CUDA_TYPES):
        s = x + y
        return s, mx.fast.layer_norm(s, weight, bias, eps)
    n = x.shape[-1]
    rows = x.size // n
    s, out = launch(
        _ADD_LN, f"add_ln<{CUDA_TYPES[x.dtype]}, {n}>",
        [x.reshape(rows, n), y.reshape(rows, n), weight.astype(x.dtype), bias.astype(x.dtype)],
        scalars=[rows, nvrtc.float_bits(eps)], grid=(rows * 32, 1, 1), threadgroup=(32 * _ROWS_PER_BLOCK, 1, 1),
        output_shapes=[(rows, n), (rows, n)], output_dtypes=[x.dtype, x.dtype])
    return s.reshape(x.shape), out.reshape(x.shape)


# x, out: n elements (n_lo, n_hi: a 64-bit count); grid-stride over 16-byte packs (or single elements if misaligned).
_GELU = _HEADER + """
template <typename T>
__global__ void gelu(const T* x, T* out, int n_lo, int n_hi) {
  const size_t n = JOIN64(n_lo, n_hi);
  constexpr int V = 16 / sizeof(T);
  const size_t start = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t step = size_t(gridDim.x) * blockDim.x;
  if (n % V == 0 && aligned16(x) && aligned16(out)) {
    using P = Pack<T, V>;
    for (size_t p = start; p < n / V; p += step) {
      P a = reinterpret_cast<const P*>(x)[p];
      #pragma unroll
      for (int k = 0; k < V; ++k) a.v[k] = static_cast<T>(gelu_f(static_cast<float>(a.v[k])));
      reinterpret_cast<P*>(out)[p] = a;
    }
  } else {
    for (size_t i = start; i < n; i += step) out[i] = static_cast<T>(gelu_f(static_cast<float>(x[i])));
  }
}
"""


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, as mlx.nn.gelu and torch.nn.GELU(). On CUDA one kernel that computes in float32 and
    rounds once (the fallback rounds after every elementwise step in half precision)."""
    if not enabled("gelu") or x.dtype not in (mx.float32, mx.float16, mx.bfloat16) or x.size == 0:
        return x * (1 + mx.erf(x / math.sqrt(2))) / 2
    packs = -(-x.size * x.itemsize // 16)
    threads = min(-(-packs // 256) * 256, 132 * 2048 * 4)  # the kernel strides beyond this
    (out,) = launch(_GELU, f"gelu<{CUDA_TYPES[x.dtype]}>", [x], scalars=nvrtc.split64(x.size),
                    grid=(threads, 1, 1), threadgroup=(256, 1, 1), output_shapes=[x.shape], output_dtypes=[x.dtype])
    return out


# feat (B, H, W, C); u, v (B, NP) float32 pixel coordinates; out (B, C). Block (32 channels, SLICES = 32 point
# slices) for one batch item (blockIdx.z); every thread keeps the running max of its slice's samples, then the
# slices meet in shared memory. Corners and weights as sample_points computes them, values in float32.
_SAMPLE_MAX = _HEADER + """
template <typename T, int H, int W, int C, int NP>
__global__ void sample_max(const T* feat, const float* u, const float* v, T* out) {
  constexpr int SLICES = 32;
  __shared__ float red[SLICES][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int j = threadIdx.y;
  const int bi = blockIdx.z;
  float m = -__int_as_float(0x7f800000);  // -inf
  if (c < C) {
    const T* f = feat + size_t(bi) * H * W * C + c;
    const float* ub = u + size_t(bi) * NP;
    const float* vb = v + size_t(bi) * NP;
    #pragma unroll 2
    for (int n = j; n < NP; n += SLICES) {
      const float uu = ub[n], vv = vb[n];
      const float u0 = floorf(uu), v0 = floorf(vv);
      const float fu = uu - u0, fv = vv - v0;
      float acc = 0.f;
      #pragma unroll
      for (int k = 0; k < 4; ++k) {  // corners (0,0) (1,0) (0,1) (1,1)
        const int dx = k & 1, dy = k >> 1;
        const float xx = u0 + dx, yy = v0 + dy;
        const float wgt = (dx == 0 ? 1.f - fu : fu) * (dy == 0 ? 1.f - fv : fv);
        const bool valid = xx >= 0.f && xx <= W - 1 && yy >= 0.f && yy <= H - 1;
        const float g = valid ? static_cast<float>(f[(size_t(yy) * W + size_t(xx)) * C]) : 0.f;
        acc += g * wgt;
      }
      m = (acc > m || acc != acc) ? acc : m;  // a NaN sample makes the max NaN, as mx.max does
    }
  }
  red[j][threadIdx.x] = m;
  __syncthreads();
  if (j == 0 && c < C) {
    #pragma unroll
    for (int k = 1; k < SLICES; ++k) {
      const float o = red[k][threadIdx.x];
      m = (o > m || o != o) ? o : m;
    }
    out[size_t(bi) * C + c] = static_cast<T>(m);
  }
}
"""


def sample_max(feat: mx.array, u: mx.array, v: mx.array, fallback) -> mx.array:
    """max over points of the bilinear samples of feat (B, H, W, C) at pixel coordinates (u, v), each (B, N)
    -> (B, C). fallback(feat, u, v) gives the same with ordinary ops (used off CUDA, or when disabled)."""
    if not enabled("sample_max") or feat.dtype not in (mx.float32, mx.float16, mx.bfloat16):
        return fallback(feat, u, v)
    B, H, W, C = feat.shape
    N = u.shape[1]
    (out,) = launch(_SAMPLE_MAX, f"sample_max<{CUDA_TYPES[feat.dtype]}, {H}, {W}, {C}, {N}>",
                    [feat, u.astype(mx.float32), v.astype(mx.float32)],
                    grid=(-(-C // 32) * 32, 32, B), threadgroup=(32, 32, 1),
                    output_shapes=[(B, C)], output_dtypes=[feat.dtype])
    return out


# One hand per block. Same arithmetic as models/lbs.py in float32 (the sums of the matrix products in another
# order): v_shaped = v_template + shapedirs @ betas; rest joints = J_regressor @ v_shaped; v_posed = v_shaped +
# posedirs^T @ (R[1:] - I); the chain t_j = t_p + R_p (j_j - j_p), R_j = R_p r_j in topological order;
# A_j = [R_j | t_j - R_j j_j]; vertices = (sum_j w_vj A_j) [v_posed; 1]; out joints from [posed joints, vertices].
_MANO = nvrtc.HEADER + """
template <int V, int K, int J, int NOUT>
__global__ void mano(const float* betas, const float* rot, const float* v_template, const float* shapedirs,
                     const float* posedirs, const float* J_regressor, const float* lbs_weights, const int* out_index,
                     float* vertices, float* joints) {
  constexpr int V3 = V * 3;
  constexpr int P = (J - 1) * 9;
  __shared__ float sb[K];
  __shared__ float sr[J * 9];
  __shared__ float sf[P];
  __shared__ float sv[V3];
  __shared__ float sj[J * 3];
  __shared__ float sw[J * 9];
  __shared__ float st[J * 3];
  __shared__ float sa[J * 12];
  const int b = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
  const int lane = tid & 31, warp = tid >> 5, nw = nt >> 5;
  for (int i = tid; i < K; i += nt) sb[i] = betas[b * K + i];
  for (int i = tid; i < J * 9; i += nt) sr[i] = rot[size_t(b) * J * 9 + i];
  __syncthreads();
  for (int i = tid; i < P; i += nt) {
    const int e = i % 9;
    sf[i] = sr[9 + i] - ((e == 0 || e == 4 || e == 8) ? 1.f : 0.f);
  }
  for (int i = tid; i < V3; i += nt) {
    float acc = 0.f;
    #pragma unroll
    for (int k = 0; k < K; ++k) acc += sb[k] * shapedirs[i * K + k];
    sv[i] = v_template[i] + acc;
  }
  __syncthreads();
  for (int o = warp; o < J * 3; o += nw) {  // rest joints, a warp per coordinate
    const int j = o / 3, c = o % 3;
    float acc = 0.f;
    for (int v = lane; v < V; v += 32) acc += J_regressor[j * V + v] * sv[v * 3 + c];
    #pragma unroll
    for (int m = 16; m > 0; m >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, m);
    if (lane == 0) sj[o] = acc;
  }
  __syncthreads();
  for (int i = tid; i < V3; i += nt) {  // pose blend shapes, in place
    float acc = 0.f;
    for (int p = 0; p < P; ++p) acc += sf[p] * posedirs[p * V3 + i];
    sv[i] += acc;
  }
  if (tid == 0) {
    const int parents[J] = PARENTS;
    for (int j = 0; j < J; ++j) {
      const int p = parents[j];
      if (p < 0) {
        for (int e = 0; e < 9; ++e) sw[j * 9 + e] = sr[j * 9 + e];
        for (int c = 0; c < 3; ++c) st[j * 3 + c] = sj[j * 3 + c];
      } else {
        const float d0 = sj[j * 3] - sj[p * 3], d1 = sj[j * 3 + 1] - sj[p * 3 + 1], d2 = sj[j * 3 + 2] - sj[p * 3 + 2];
        for (int r = 0; r < 3; ++r) {
          const float* a = sw + p * 9 + r * 3;
          st[j * 3 + r] = st[p * 3 + r] + (a[0] * d0 + a[1] * d1 + a[2] * d2);
          for (int c = 0; c < 3; ++c) {
            sw[j * 9 + r * 3 + c] = a[0] * sr[j * 9 + c] + a[1] * sr[j * 9 + 3 + c] + a[2] * sr[j * 9 + 6 + c];
          }
        }
      }
      for (int r = 0; r < 3; ++r) {
        const float* a = sw + j * 9 + r * 3;
        for (int c = 0; c < 3; ++c) sa[j * 12 + r * 4 + c] = a[c];
        sa[j * 12 + r * 4 + 3] = st[j * 3 + r] - (a[0] * sj[j * 3] + a[1] * sj[j * 3 + 1] + a[2] * sj[j * 3 + 2]);
      }
    }
  }
  __syncthreads();
  float* vb = vertices + size_t(b) * V3;
  for (int v = tid; v < V; v += nt) {  // skinning
    float T[12];
    #pragma unroll
    for (int m = 0; m < 12; ++m) T[m] = 0.f;
    for (int j = 0; j < J; ++j) {
      const float w = lbs_weights[v * J + j];
      #pragma unroll
      for (int m = 0; m < 12; ++m) T[m] += w * sa[j * 12 + m];
    }
    const float x = sv[v * 3], y = sv[v * 3 + 1], z = sv[v * 3 + 2];
    #pragma unroll
    for (int r = 0; r < 3; ++r) vb[v * 3 + r] = (T[r * 4] * x + T[r * 4 + 1] * y + T[r * 4 + 2] * z) + T[r * 4 + 3];
  }
  __syncthreads();
  for (int o = tid; o < NOUT * 3; o += nt) {
    const int q = o / 3, c = o % 3, idx = out_index[q];
    joints[(size_t(b) * NOUT + q) * 3 + c] = idx < J ? st[idx * 3 + c] : vb[(idx - J) * 3 + c];
  }
}
"""


def mano(betas: mx.array, rot_mats: mx.array, v_template: mx.array, shapedirs: mx.array, posedirs: mx.array,
         J_regressor: mx.array, lbs_weights: mx.array, parents: tuple[int, ...], out_index: mx.array, fallback):
    """The MANO layer, float32: betas (B, K), rot_mats (B, J, 3, 3) -> (vertices (B, V, 3), joints (B, NOUT, 3)),
    joints taken by out_index from [posed joints, vertices]. fallback() gives the same with ordinary ops (used
    off CUDA or when disabled)."""
    if not enabled("mano") or betas.shape[0] == 0:
        return fallback()
    B, K = betas.shape
    V, J = lbs_weights.shape
    n_out = out_index.shape[0]
    source = "#define PARENTS {" + ", ".join(str(int(p)) for p in parents) + "}\n" + _MANO
    vertices, joints = launch(
        source, f"mano<{V}, {K}, {J}, {n_out}>",
        [betas.astype(mx.float32), rot_mats.astype(mx.float32).reshape(B, J * 9), v_template.astype(mx.float32),
         shapedirs.reshape(V * 3, K).astype(mx.float32), posedirs.astype(mx.float32),
         J_regressor.astype(mx.float32), lbs_weights.astype(mx.float32), out_index.astype(mx.int32)],
        grid=(B * 256, 1, 1), threadgroup=(256, 1, 1),
        output_shapes=[(B, V, 3), (B, n_out, 3)], output_dtypes=[mx.float32, mx.float32])
    return vertices, joints


# 6D -> rotation matrix, float32, a thread per rotation: geometry.rot6d_to_rotmat's arithmetic in its order.
_ROT6D = """
__global__ void rot6d(const float* x, float* out, int count) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const float* a = x + i * 6;
  const float eps = 1e-12f;
  const float a1x = a[0], a1y = a[1], a1z = a[2], a2x = a[3], a2y = a[4], a2z = a[5];
  float n1 = sqrtf(a1x * a1x + a1y * a1y + a1z * a1z);
  n1 = (n1 != n1 || n1 > eps) ? n1 : eps;
  const float b1x = a1x / n1, b1y = a1y / n1, b1z = a1z / n1;
  const float d = b1x * a2x + b1y * a2y + b1z * a2z;
  const float cx = a2x - d * b1x, cy = a2y - d * b1y, cz = a2z - d * b1z;
  float n2 = sqrtf(cx * cx + cy * cy + cz * cz);
  n2 = (n2 != n2 || n2 > eps) ? n2 : eps;
  const float b2x = cx / n2, b2y = cy / n2, b2z = cz / n2;
  float* o = out + i * 9;
  o[0] = b1x; o[1] = b2x; o[2] = b1y * b2z - b1z * b2y;
  o[3] = b1y; o[4] = b2y; o[5] = b1z * b2x - b1x * b2z;
  o[6] = b1z; o[7] = b2z; o[8] = b1x * b2y - b1y * b2x;
}
"""

# rotation matrix -> axis-angle, float32, a thread per rotation: geometry.rotmat_to_axis_angle's arithmetic
# (Shepperd's quaternion, then the angle) in its order.
_AXIS_ANGLE = """
__global__ void axis_angle(const float* r, float* out, int count) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const float* m = r + i * 9;
  const float m00 = m[0], m01 = m[1], m02 = m[2];
  const float m10 = m[3], m11 = m[4], m12 = m[5];
  const float m20 = m[6], m21 = m[7], m22 = m[8];
  const float tr = m00 + m11 + m22;
  const float cand[4] = {tr, m00 - m11 - m22, m11 - m00 - m22, m22 - m00 - m11};
  float best = cand[0];
  int k = 0;
  for (int c = 1; c < 4; ++c) {
    if (cand[c] > best) k = c;
    best = (best != best || best > cand[c]) ? best : cand[c];
  }
  float q0, q1, q2, q3;
  if (k == 0) { q0 = m21 - m12; q1 = m02 - m20; q2 = m10 - m01; q3 = 1.f + tr; }
  else if (k == 1) { q0 = 1.f + m00 - m11 - m22; q1 = m01 + m10; q2 = m02 + m20; q3 = m21 - m12; }
  else if (k == 2) { q0 = m01 + m10; q1 = 1.f + m11 - m00 - m22; q2 = m12 + m21; q3 = m02 - m20; }
  else { q0 = m02 + m20; q1 = m12 + m21; q2 = 1.f + m22 - m00 - m11; q3 = m10 - m01; }
  const float qn = sqrtf(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3);
  const float sign = (q3 < 0.f ? -1.f : 1.f) / qn;
  const float x = q0 * sign, y = q1 * sign, z = q2 * sign, w = q3 * sign;
  const float n = sqrtf(x * x + y * y + z * z);
  const float angle = 2.f * atan2f(n, w);
  const bool small = angle < 1e-3f;
  const float scale = small ? 2.f + angle * angle / 12.f : angle / n;
  out[i * 3] = x * scale; out[i * 3 + 1] = y * scale; out[i * 3 + 2] = z * scale;
}
"""


def _per_rotation(name: str, source: str, a: mx.array, lead: tuple[int, ...], width: int,
                  out_shape: tuple[int, ...], fallback) -> mx.array:
    """A thread-per-rotation float32 kernel over a's leading axes: (*lead, width) -> (*lead, *out_shape)."""
    if not enabled("rotations") or a.dtype != mx.float32 or a.size == 0:
        return fallback(a)
    n = a.size // width
    out_width = math.prod(out_shape)
    (out,) = launch(source, name, [a.reshape(n, width)], scalars=[n], grid=(-(-n // 64) * 64, 1, 1),
                    threadgroup=(64, 1, 1), output_shapes=[(n, out_width)], output_dtypes=[mx.float32])
    return out.reshape(*lead, *out_shape)


def rot6d_to_rotmat(x: mx.array, fallback) -> mx.array:
    """x (..., 6) -> (..., 3, 3) float32; fallback(x) off CUDA or when disabled."""
    return _per_rotation("rot6d", _ROT6D, x, x.shape[:-1], 6, (3, 3), fallback)


def rotmat_to_axis_angle(r: mx.array, fallback) -> mx.array:
    """r (..., 3, 3) -> (..., 3) float32; fallback(r) off CUDA or when disabled."""
    return _per_rotation("axis_angle", _AXIS_ANGLE, r, r.shape[:-2], 9, (3,), fallback)
