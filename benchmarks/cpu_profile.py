"""Where one crop's time goes on the CPU: each part of the float32 forward at b=1 timed alone, with an
mx.eval after it, plus the matrix rate OpenBLAS gives at ViT-H's shapes.

    python benchmarks/cpu_profile.py [--repeats 7] [--no-cpu-math] [--json out.json]

Prints min and median ms per part and the per-crop estimate (a block part x 32). min is the better guide on
a shared machine. Random weights (the time does not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mlx_hands.blas import use_system_blas  # noqa: E402

BLAS = use_system_blas()  # the CPU wheel's BLAS is slow; must precede the first mlx import
import mlx.core as mx  # noqa: E402

from mlx_hands import bench, synthetic  # noqa: E402
from mlx_hands.models import cpu_math  # noqa: E402
from mlx_hands.models.wilor import normalize_crops  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts) * 1e3, float(np.median(ts)) * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-cpu-math", action="store_true", help="MLX's own erf, exp and fused attention")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    mx.set_default_device(mx.cpu)
    print(f"mlx {mx.__version__}, BLAS {BLAS}")
    model = synthetic.random_model(precision="float32")
    if args.no_cpu_math:
        for _, m in model.named_modules():
            if hasattr(m, "cpu_math"):
                m.cpu_math = False
    vit, depth = model.backbone, model.config.vit.depth
    blk = vit.blocks[0]
    crops = mx.array(bench.make_crops(1)[:, :, 32:224])
    x = normalize_crops(crops, model.config.vit.image_size, mx.float32)
    o = vit(x)
    temp = model.mano.posed(o.betas, o.rotmats)
    mx.eval(x, o.features, o.betas, o.rotmats, o.cam, o.pose_6d, temp.vertices)
    T, C = 210, model.config.vit.dim
    h = mx.random.normal((1, T, C))
    a = mx.random.normal((1, T, 4 * C))
    stage, one_crop = bench.mlx_model_stage(model), bench.make_crops(1)
    heads = blk.attn.num_heads
    q = mx.random.normal((1, heads, T, C // heads))
    s = q @ q.swapaxes(-1, -2)
    n1 = blk.norm1
    mx.eval(h, a, q, s)

    def ev(f):
        return lambda: mx.eval(f())

    per_block = {
        "qkv linear (GEMM 210x1280x3840)": ev(lambda: blk.attn.qkv(h)),
        "attention core, this path": ev(lambda: cpu_math.attention(q, q, q, 0.1) if not args.no_cpu_math
                                        else mx.fast.scaled_dot_product_attention(q, q, q, scale=0.1)),
        "  q k^T (16 heads)": ev(lambda: q @ q.swapaxes(-1, -2)),
        "  softmax, MLX": ev(lambda: mx.softmax(s, axis=-1)),
        "  softmax, cpu_math": ev(lambda: cpu_math.softmax(s, 0.1)),
        "  mx.fast.scaled_dot_product_attention": ev(lambda: mx.fast.scaled_dot_product_attention(q, q, q, scale=0.1)),
        "proj linear (GEMM 210x1280x1280)": ev(lambda: blk.attn.proj(h)),
        "fc1 linear (GEMM 210x1280x5120)": ev(lambda: blk.mlp.fc1(h)),
        "GELU, MLX erf": ev(lambda: a * (1 + mx.erf(a / math.sqrt(2))) / 2),
        "GELU, cpu_math": ev(lambda: cpu_math.gelu(a)),
        "fc2 linear (GEMM 210x5120x1280)": ev(lambda: blk.mlp.fc2(a)),
        "LayerNorm": ev(lambda: mx.fast.layer_norm(h, n1.weight, n1.bias, n1.eps)),
        "residual add": ev(lambda: h + h),
        "whole block": ev(lambda: blk(h)),
    }
    whole = {
        "input normalisation": ev(lambda: normalize_crops(crops, model.config.vit.image_size, mx.float32)),
        "patch embedding": ev(lambda: vit.patch_embed(x)),
        "ViT (32 blocks + heads)": ev(lambda: vit(x).features),
        "MANO (one pass)": ev(lambda: model.mano.posed(o.betas, o.rotmats).vertices),
        "RefineNet": ev(lambda: model.refine_net(o.features, temp.vertices, o.pose_6d, o.betas, o.cam, 5000.0).cam),
        "  deconvolutions": ev(lambda: model.refine_net.deconv(o.features)[0]),
        "model stage (host crop -> host outputs)": lambda: stage(one_crop),
    }
    rows = {}
    print(f"\n| part | min ms | median ms | x{depth} blocks, min ms |\n|---|---|---|---|")
    for name, fn in per_block.items():
        lo, med = timed(fn, args.repeats)
        rows[name] = (lo, med)
        print(f"| {name} | {lo:.2f} | {med:.2f} | {lo * depth:.0f} |", flush=True)
    for name, fn in whole.items():
        lo, med = timed(fn, max(3, args.repeats // 2))
        rows[name] = (lo, med)
        print(f"| {name} | {lo:.2f} | {med:.2f} | |", flush=True)
    gemm = sum(rows[k][0] for k in rows if "GEMM" in k)
    flops = 2 * T * C * (3 * C + C + 8 * C)
    print(f"\nViT GEMMs: {gemm:.1f} ms a block (min), {flops / gemm / 1e6:.0f} GFLOP/s, x{depth} = {gemm * depth:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps({"blas": BLAS, "mlx": mx.__version__, "rows_ms_min_median": rows}, indent=1))


if __name__ == "__main__":
    main()
