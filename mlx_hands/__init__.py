"""mlx-hands: WiLoR 3D hand pose estimation in MLX.

    from mlx_hands import HandPosePipeline
    pipe = HandPosePipeline.from_pretrained()      # downloads warmshao/WiLoR-mini once and converts it
    hands = pipe("photo.jpg")                      # list[Hand]

    import mlx_hands
    loaded = mlx_hands.load("path/or/hub-repo")    # the one loader: .wilor, .detector, .path, .info
"""

import importlib

from .blas import use_system_blas

__version__ = "0.1.0"

# Linux: MLX's wheel multiplies with the slow reference BLAS (20-40x slower on a CPU); the system OpenBLAS, loaded
# before any module of this package imports MLX, takes its place (mlx_hands.blas). A package's __init__ runs
# before its modules, so this covers every way in; if MLX was imported earlier, loading a model says so.
use_system_blas()

_LAZY = {
    "load": ("mlx_hands.hub", "load"),
    "HandPosePipeline": ("mlx_hands.pipeline.runner", "HandPosePipeline"),
    "Hand": ("mlx_hands.types", "Hand"),
    "WiLoR": ("mlx_hands.hub", "WiLoR"),
    "WiLoRConfig": ("mlx_hands.config", "WiLoRConfig"),
    "convert": ("mlx_hands.convert", "convert"),
    "quantize_model": ("mlx_hands.quant", "quantize_model"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    # imported on first use: `import mlx_hands` stays cheap and loads MLX only when a name that needs it is
    # asked for
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mlx_hands' has no attribute {name!r}")
