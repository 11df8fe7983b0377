"""mlx-hands convert: the original WiLoR files -> the canonical MLX directory."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..config import DTYPES
from ..convert import convert
from ..convert.quantized import quantize_dir
from ..pipeline.calibration import folder_calibration_crops


def add_parser(sub, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser("convert", help=help_text, description=(
        "Convert wilor_final.ckpt, mano_mean_params.npz, detector.pt and MANO_RIGHT.pkl (a folder holding them, "
        "e.g. WiLoR-mini's pretrained_models/, and/or explicit files) into config.json + model.safetensors + "
        "mano.safetensors. Needs neither torch nor chumpy. SRC may also be the seed project's "
        "wilor-mlx.safetensors or wilor-mlx-int4.safetensors (give --mano unless the file carries MANO)."))
    p.add_argument("src", nargs="?", help="folder with the original files, or a wilor-mlx .safetensors file")
    p.add_argument("-o", "--output", dest="dst", required=True, help="output folder")
    p.add_argument("--checkpoint", help="wilor_final.ckpt")
    p.add_argument("--mean-params", help="mano_mean_params.npz")
    p.add_argument("--mano", help="MANO_RIGHT.pkl (converted on this machine; never redistributed)")
    p.add_argument("--detector", help="detector.pt (ultralytics YOLOv8-pose hand detector)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="float dtype of the stored weights (default float32)")
    add_quantization_args(p)
    add_calibration_args(p)
    p.set_defaults(func=run)
    return p


def add_quantization_args(p: argparse.ArgumentParser) -> None:
    """mlx-lm's flags: -q/--quantize, --q-bits, --q-group-size (either of the last two implies -q)."""
    p.add_argument("-q", "--quantize", action="store_true",
                   help="quantize the ViT's transformer linears (MLX affine quantization; default 4-bit, group 64)")
    p.add_argument("--q-bits", type=int, choices=[4, 8], help="bits per weight (default 4; implies -q)")
    p.add_argument("--q-group-size", type=int, choices=[32, 64, 128],
                   help="weights sharing one scale and bias (default 64; implies -q)")
    p.add_argument("--q-uniform", action="store_true",
                   help="quantize every transformer linear alike (default: the most sensitive layers stay at higher "
                        "precision: 8-bit keeps the first blocks in float, 4-bit keeps them and attn.proj at 8 bits; "
                        "implies -q)")


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    """--calibrate PATH... and --calibrate-max N: GPTQ levels from hands in the user's photos (mlx_hands.quant.gptq)."""
    p.add_argument("--calibrate", nargs="+", metavar="PATH",
                   help="photos of hands, folders of them, or .npy/.npz arrays of (N, 256, 256, 3) crops: choose the "
                        "4/8-bit levels with GPTQ on these hands (much more accurate at 4 bits; minutes). Default: "
                        "round to nearest, no data needed")
    p.add_argument("--calibrate-max", type=int, default=64, metavar="N", help="use at most N hand crops (default 64)")


def quantization_args(args) -> tuple[int | None, int, bool]:
    """(q_bits or None, q_group_size, q_uniform) from add_quantization_args' flags."""
    on = args.quantize or args.q_bits is not None or args.q_group_size is not None or args.q_uniform
    return (args.q_bits or 4) if on else None, args.q_group_size or 64, args.q_uniform


def run(args) -> int:
    q_bits, q_group_size, q_uniform = quantization_args(args)
    kwargs = dict(checkpoint=args.checkpoint, mean_params=args.mean_params, mano=args.mano, detector=args.detector,
                  dtype=args.dtype)
    if args.calibrate_max < 1:
        raise ValueError(f"--calibrate-max must be >= 1, got {args.calibrate_max}")
    if args.calibrate:
        if q_bits is None:
            raise ValueError("--calibrate only serves quantization: add -q (or --q-bits)")
        dst = Path(args.dst)
        tmp = dst.with_name(dst.name + ".float")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            convert(args.src, tmp, **kwargs)
            crops = folder_calibration_crops(tmp, args.calibrate, max_crops=args.calibrate_max)
            quantize_dir(tmp, dst, bits=q_bits, group_size=q_group_size, uniform=q_uniform, calibration=crops)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        dst = convert(args.src, args.dst, **kwargs, q_bits=q_bits, q_group_size=q_group_size, q_uniform=q_uniform)
    files = ", ".join(sorted(f.name for f in Path(dst).iterdir() if f.is_file()))
    print(f"wrote {dst}: {files}")
    return 0
