"""mlx-hands quantize: a converted model -> a quantized and/or lower-precision copy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import DTYPES, MODEL_FILE
from ..convert.quantized import quantize_dir
from ..pipeline.calibration import folder_calibration_crops
from .convert import add_calibration_args, add_quantization_args, quantization_args


def add_parser(sub, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser("quantize", help=help_text, description=(
        "Write a copy of a converted model folder with the ViT's transformer linears quantized "
        "(MLX affine quantization: 4 or 8 bits, group size 32/64/128) and/or the float weights in another "
        "dtype. By default: 4 bits, group 64, with the most sensitive layers at 8 bits (--q-uniform: none); "
        "--no-quantize --dtype D only changes the float dtype. MANO and the detector are copied (the detector "
        "cast to --dtype)."))
    p.add_argument("src", help="converted model folder (config.json + model.safetensors)")
    p.add_argument("-o", "--output", dest="dst", required=True, help="output folder")
    p.add_argument("--dtype", choices=DTYPES,
                   help="float dtype of the weights that stay in float (default: as stored)")
    add_quantization_args(p)
    add_calibration_args(p)
    p.add_argument("--no-quantize", action="store_true", help="only change the float dtype (needs --dtype)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    q_bits, q_group_size, q_uniform = quantization_args(args)
    if args.no_quantize:
        if q_bits is not None:
            raise ValueError("--no-quantize contradicts -q/--q-bits/--q-group-size/--q-uniform")
        if args.dtype is None:
            raise ValueError("--no-quantize needs --dtype (otherwise there is nothing to change)")
        if args.calibrate:
            raise ValueError("--calibrate only serves quantization; drop --no-quantize")
    elif q_bits is None:
        q_bits = 4
    if args.calibrate_max < 1:
        raise ValueError(f"--calibrate-max must be >= 1, got {args.calibrate_max}")
    crops = None
    if args.calibrate:
        crops = folder_calibration_crops(args.src, args.calibrate, max_crops=args.calibrate_max)
        print(f"calibrating on {len(crops)} hand crops", file=sys.stderr)
    dst = quantize_dir(args.src, args.dst, bits=q_bits, group_size=q_group_size, dtype=args.dtype, uniform=q_uniform,
                       calibration=crops)
    size = (Path(dst) / MODEL_FILE).stat().st_size / 1e6
    print(f"wrote {dst} (model.safetensors {size:.1f} MB)")
    if q_bits == 4 and not args.calibrate:
        print("note: 4-bit levels rounded to nearest; --calibrate PHOTOS (GPTQ) measured ~10x more accurate "
              "(BENCHMARKS.md)", file=sys.stderr)
    return 0
