"""The roofline of the model stage: arithmetic per crop, bytes of weights, and the two ceilings measured through
MLX on the current device (memory bandwidth, matrix rate), for benchmarks/side_by_side.py --floors.

    python benchmarks/roofline.py            # prints the ceilings and the floors of b = 1, 8, 64
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_hands.blas import use_system_blas  # noqa: E402

use_system_blas()  # before MLX is imported: Linux CPUs then multiply through OpenBLAS
import mlx.core as mx  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from mlx_hands.bench import median_ms  # noqa: E402
from mlx_hands.config import WiLoRConfig  # noqa: E402


def model_cost(config: WiLoRConfig | None = None) -> dict[str, float]:
    """Arithmetic per crop (FLOPs, a multiply-add counted as 2) of the matrix work, by part.

    ViT: patch embedding, per block the four linears and the two attention products; RefineNet: the 1x1
    conv and the transposed convolutions (2 * H_in * W_in * C_in * C_out * k * k each); MANO: the
    blend-shape, pose-corrective and skinning products (two passes).
    """
    c = config or WiLoRConfig()
    v = c.vit
    hp, wp = v.grid
    P = hp * wp
    T = P + v.num_hand_joints + 3
    d, hidden = v.dim, int(v.dim * v.mlp_ratio)
    patch = 2 * P * 3 * v.patch_size**2 * d
    block = 2 * T * d * (3 * d + d + 2 * hidden) + 2 * 2 * T * T * d
    fd = c.refine_net.feat_dim
    refine = 2 * P * fd * (fd // 2)
    steps = [[fd // 2, fd // 4], [fd // 2, fd // 4, fd // 8], [fd // 2, fd // 4, fd // 8, fd // 8]]
    for dims in steps[: int(math.log2(c.refine_net.upscale)) + 1]:
        h, w = hp, wp
        for ci, co in zip(dims[:-1], dims[1:]):
            refine += 2 * h * w * ci * co * 16
            h, w = 2 * h, 2 * w
    m = c.mano
    V, J = m.num_vertices, m.num_joints
    mano = 2 * (2 * V * 3 * m.num_betas + 2 * m.num_pose_basis * V * 3 + 2 * V * J * 16 + 2 * J * V * 3)
    return {"vit": float(patch + v.depth * block), "refine_net": float(refine), "mano": float(mano),
            "total": float(patch + v.depth * block + refine + mano)}


def weight_bytes(model) -> int:
    """Bytes of every parameter (ViT + RefineNet, as stored; quantized layers at their packed size)."""
    return int(sum(a.nbytes for _, a in tree_flatten(model.parameters())))


def _median_seconds(fn: Callable[[], None], iters: int) -> float:
    return median_ms(fn, iters=iters, warmup=1) / 1e3


def _on_gpu() -> bool:
    return mx.default_device().type == mx.DeviceType.gpu


def measure_bandwidth(nbytes: int | None = None, iters: int = 10) -> float:
    """Device-memory bandwidth in GB/s through MLX: a large elementwise copy, bytes read + written
    (1 GiB on a GPU, 256 MiB on the CPU)."""
    n = (nbytes or (1 << 30 if _on_gpu() else 1 << 28)) // 4
    a = mx.random.uniform(shape=(n,))
    mx.eval(a)
    dt = _median_seconds(lambda: mx.eval(a * 1.0001), iters)
    return 2 * n * 4 / dt / 1e9


def measure_matmul(n: int | None = None, dtype=None, iters: int = 10) -> float:
    """Matrix rate in TFLOP/s through MLX: an n x n x n product on random data (GPU: 8192, bfloat16;
    CPU: 2048, float32, MLX's CPU having no fast half-precision GEMM)."""
    n = n or (8192 if _on_gpu() else 2048)
    dtype = dtype or (mx.bfloat16 if _on_gpu() else mx.float32)
    a = mx.random.normal((n, n)).astype(dtype)
    b = mx.random.normal((n, n)).astype(dtype)
    mx.eval(a, b)
    dt = _median_seconds(lambda: mx.eval(a @ b), iters)
    return 2 * n**3 / dt / 1e12


def floors(config: WiLoRConfig, model, bandwidth_gbs: float, matmul_tflops: float, batch: int) -> dict[str, float]:
    """The two lower bounds of one model-stage call, in ms: weights once over bandwidth; FLOPs over rate."""
    return {"bytes_ms": weight_bytes(model) / (bandwidth_gbs * 1e9) * 1e3,
            "flops_ms": batch * model_cost(config)["total"] / (matmul_tflops * 1e12) * 1e3}


def main() -> None:
    from mlx_hands.synthetic import random_model

    config = WiLoRConfig()
    gpu = _on_gpu()
    model = random_model(config, "bfloat16" if gpu else "float32")
    bw, rate = measure_bandwidth(), measure_matmul()
    print(f"memory bandwidth {bw:.1f} GB/s, matrix rate {rate * 1e3:.0f} GFLOP/s; {weight_bytes(model) / 1e9:.2f} GB "
          f"of weights, {model_cost(config)['total'] / 1e9:.1f} GFLOP per crop")
    for b in (1, 8, 64):
        f = floors(config, model, bw, rate, b)
        print(f"b={b}: weights / bandwidth {f['bytes_ms']:.2f} ms, FLOPs / rate {f['flops_ms']:.2f} ms")


if __name__ == "__main__":
    main()
