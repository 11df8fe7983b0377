"""Where the model stage's host<->device time goes at large batch (MLX's CUDA backend keeps host-created
arrays in managed memory): input creation alone, then the model stage under allocator settings.

    python benchmarks/transfer.py -b 64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mlx_hands.blas import use_system_blas  # noqa: E402

use_system_blas()
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from mlx_hands import bench, synthetic, transfer  # noqa: E402


def med(fn, n=20):
    return bench.median_ms(fn, iters=n)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-b", "--batch", type=int, default=64)
    p.add_argument("-p", "--precision", default="bfloat16")
    p.add_argument("--model", action="store_true", help="also the model stage under allocator settings (slow start)")
    args = p.parse_args()
    crops = [synthetic.make_crops(args.batch, i) for i in range(3)]
    i = [0]

    def nxt():
        i[0] += 1
        return crops[i[0] % 3]

    print(f"mx.array(crops) + eval: {med(lambda: mx.eval(mx.array(nxt()))):.2f} ms")

    def touch(x):
        mx.eval(x.astype(mx.float32).sum())

    def prefetched(sync, mode=None):
        x = transfer.to_device(nxt(), mode=mode)
        if sync:
            mx.synchronize()
        return x

    for mode in transfer.MODES:
        print(f"to_device ({mode}): {med(lambda: prefetched(False, mode)):.2f} ms")
        print(f"to_device ({mode}) + first device read: {med(lambda: touch(prefetched(False, mode))):.2f} ms")
    st = transfer._staging  # None off CUDA
    for k in (1, 2, 4) if st is not None else ():
        transfer.COPY_THREADS = k
        print(f"host copy into the pinned buffer, {k} thread(s): {med(lambda: st._fill(nxt())):.2f} ms")
        print(f"to_device (staged, {k} thread(s)) + first device read: {med(lambda: touch(prefetched(False))):.2f} ms")
    window = lambda: nxt()[:, :, 32:224]  # noqa: E731  (WiLoR.input_window)
    print(f"to_device (staged) of the 256x192 window + first device read: "
          f"{med(lambda: touch(transfer.to_device(window()))):.2f} ms")
    transfer.COPY_THREADS = min(4, transfer.os.cpu_count() or 1)
    a = crops[0]
    np.testing.assert_array_equal(np.array(transfer.to_device(a)), a)
    f = a.astype(np.float32) / 3
    np.testing.assert_array_equal(np.array(transfer.to_device(f)), f)
    print("staged copies are exact")
    print(f"mx.array + first device read: {med(lambda: touch(mx.array(nxt()))):.2f} ms")
    keep = [mx.array(c) for c in crops]
    mx.eval(keep)
    print(f"device read of an array already read once: {med(lambda: touch(keep[i[0] % 3])):.2f} ms")
    print(f"mx.array(crops) + sum on device: {med(lambda: mx.eval(mx.array(nxt()).astype(mx.float32).sum())):.2f} ms")
    trimmed = [np.ascontiguousarray(c[:, :, 32:224]) for c in crops]
    print(f"trimmed (256x192) + sum: {med(lambda: mx.eval(mx.array(trimmed[i[0] % 3]).astype(mx.float32).sum())):.2f} ms")
    if not args.model:
        return
    model = synthetic.random_model(precision=args.precision)
    run = bench.mlx_model_stage(model)
    print(f"model stage default: {med(lambda: run(nxt())):.2f} ms")
    x = mx.array(crops[0])
    mx.eval(x)
    print(f"forward on a device-resident input: {med(lambda: mx.eval(model(x).vertices)):.2f} ms")

    def fresh():
        mx.clear_cache()
        run(nxt())

    print(f"model stage, clear_cache before each call: {med(fresh):.2f} ms")
    mx.set_cache_limit(0)
    print(f"model stage, cache limit 0: {med(lambda: run(nxt())):.2f} ms")


if __name__ == "__main__":
    main()
