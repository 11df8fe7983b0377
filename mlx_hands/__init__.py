"""mlx-hands: WiLoR 3D hand pose estimation in MLX.

    from mlx_hands import HandPosePipeline
    pipe = HandPosePipeline.from_pretrained()      # downloads warmshao/WiLoR-mini once and converts it
    hands = pipe("photo.jpg")                      # list[Hand]

    import mlx_hands
    loaded = mlx_hands.load("path/or/hub-repo")    # the one loader: .wilor, .detector, .path, .info
"""

import importlib

__version__ = "0.1.0"

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
    # imported on first use: `import mlx_hands` stays cheap, free of side effects, and loads MLX only when a
    # name that needs it is asked for (so that mlx_hands.blas.use_system_blas can run first)
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mlx_hands' has no attribute {name!r}")
