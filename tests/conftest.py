import os

os.environ["MLX_ENABLE_TF32"] = "0"  # exact fp32 matmuls on CUDA; set before mlx is imported

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _private_caches(tmp_path_factory, monkeypatch):
    """Every test converts into its own cache and never touches the user's Hub cache (or the network's)."""
    root = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("MLX_HANDS_CACHE", str(root / "mlx-hands"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hf"))


def use_tiny_default_config(monkeypatch, config):
    """Make `config` the WiLoRConfig that conversions start from when none is given (the CLI, the hub).

    Sizes are read from a checkpoint but the head count is not in the weights: conversions take the released
    model's (16); the tiny golden model has 4."""
    import mlx_hands.convert

    real = mlx_hands.convert.WiLoRConfig

    class TinyDefault:  # WiLoRConfig() -> config; with arguments, and from_dict, the real class
        from_dict = staticmethod(real.from_dict)

        def __new__(cls, *args, **kwargs):
            return real(*args, **kwargs) if args or kwargs else config

    monkeypatch.setattr(mlx_hands.convert, "WiLoRConfig", TinyDefault)
