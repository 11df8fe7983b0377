"""mlx-hands: WiLoR 3D hand pose estimation in MLX.

    from mlx_hands import HandPosePipeline
    pipe = HandPosePipeline.from_pretrained()      # downloads warmshao/WiLoR-mini once and converts it
    hands = pipe("photo.jpg")                      # list[Hand]
"""

__version__ = "0.1.0"

_LAZY = {
    "HandPosePipeline": ("mlx_hands.pipeline.runner", "HandPosePipeline"),
    "Hand": ("mlx_hands.pipeline.types", "Hand"),
    "WiLoR": ("mlx_hands.models.wilor", "WiLoR"),
    "WiLoRConfig": ("mlx_hands.config", "WiLoRConfig"),
    "convert": ("mlx_hands.convert", "convert"),
    "load_wilor": ("mlx_hands.weights", "load_wilor"),
    "quantize_model": ("mlx_hands.quantize", "quantize_model"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    # imported on first use: `import mlx_hands` stays cheap and free of side effects
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mlx_hands' has no attribute {name!r}")
