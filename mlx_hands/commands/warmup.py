"""mlx-hands warmup: compile a model's GPU kernels now, into the kernel cache, so that its first use does not.

    mlx-hands warmup                                   # the default model, as stored
    mlx-hands warmup --model ./wilor-mlx --dtype bfloat16 --batch 1 2 4 8

For container images: run it once while building (on a machine with the same GPU kind and MLX version), with
MLX_HANDS_CACHE (or MLX_PTX_CACHE_DIR) pointing into the image. Without it, the first run of a model on a GPU
compiles in a background process while the model runs uncompiled (mlx_hands.kernel_cache).
"""

from __future__ import annotations

import argparse
import time

from ..config import DTYPES
from ..kernel_cache import use_kernel_cache, warm
from ..pipeline.runner import HandPosePipeline


def add_parser(sub, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser("warmup", help=help_text, description=(
        "Run the model's compiled forward at each batch size (and the hand detector once) so that every GPU kernel "
        "is compiled into the kernel cache (<cache>/kernels/<mlx version>, or MLX_PTX_CACHE_DIR). On a CPU there is "
        "nothing to compile; the command then only checks that the model runs."))
    p.add_argument("--model", default=None,
                   help="converted model folder, folder of original files or Hub repo id (default warmshao/WiLoR-mini)")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    p.add_argument("--mano", default=None, help="MANO_RIGHT.pkl or mano.safetensors, if not in the model folder")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="compute dtype (default: as stored)")
    p.add_argument("-b", "--batch", type=int, nargs="+", default=[1, 2, 4, 8], help="crops per call to compile for")
    p.add_argument("--no-detector", action="store_true", help="leave the hand detector out")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    if any(b < 1 for b in args.batch):
        raise ValueError(f"--batch values must be >= 1, got {args.batch}")
    folder = use_kernel_cache()
    t = time.perf_counter()
    pipe = HandPosePipeline.from_pretrained(args.model, revision=args.revision, mano_path=args.mano, dtype=args.dtype,
                                            detector=not args.no_detector)
    print(f"loaded {pipe.info.get('path')} on {pipe.device} in {time.perf_counter() - t:.1f} s; kernel cache {folder}")
    start = time.perf_counter()
    warm(pipe.model, pipe.detector, batches=args.batch,
         on_step=lambda name, s: print(f"  {name}: {s:.2f} s", flush=True))
    print(f"warm in {time.perf_counter() - start:.1f} s")
    return 0
