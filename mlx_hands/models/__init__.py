"""MLX networks: WiLoR (ViT-H backbone, RefineNet, MANO) and the YOLOv8-pose hand detector. They know nothing
of files (except nvrtc.py, which keeps our compiled GPU kernels on disk); mlx_hands.weights builds them from a
converted folder. Nothing here imports cv2, torch or PIL."""

import mlx.core as mx

from ..config import DTYPES

MX_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
assert tuple(MX_DTYPES) == DTYPES


def mx_dtype(name: str):
    """The MLX dtype of a name in mlx_hands.config.DTYPES, or ValueError."""
    if name not in MX_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return MX_DTYPES[name]
