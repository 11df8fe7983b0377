"""mlx-hands convert: the original WiLoR files -> the canonical MLX directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser("convert", help=help_text, description=(
        "Convert wilor_final.ckpt, mano_mean_params.npz, detector.pt and MANO_RIGHT.pkl (a folder holding them, "
        "e.g. WiLoR-mini's pretrained_models/, and/or explicit files) into config.json + model.safetensors + "
        "mano.safetensors. Needs neither torch nor chumpy."))
    p.add_argument("src", nargs="?", help="folder with the original files")
    p.add_argument("-o", "--output", dest="dst", required=True, help="output folder")
    p.add_argument("--checkpoint", help="wilor_final.ckpt")
    p.add_argument("--mean-params", help="mano_mean_params.npz")
    p.add_argument("--mano", help="MANO_RIGHT.pkl (converted on this machine; never redistributed)")
    p.add_argument("--detector", help="detector.pt (ultralytics YOLOv8-pose hand detector)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..convert import convert

    dst = convert(args.src, args.dst, checkpoint=args.checkpoint, mean_params=args.mean_params, mano=args.mano,
                  detector=args.detector, dtype=args.dtype)
    files = ", ".join(sorted(f.name for f in Path(dst).iterdir() if f.is_file()))
    print(f"wrote {dst}: {files}")
    return 0
