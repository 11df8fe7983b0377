"""The environment variables mlx-hands reads, in one place. Each is read when it is used (never at import),
so a value set by a program before its first call counts.

    MLX_HANDS_CACHE        where converted models and the GPU kernel cache live (else $XDG_CACHE_HOME/mlx-hands,
                           else ~/.cache/mlx-hands)
    MLX_HANDS_TRANSFER     host <-> GPU copies on CUDA: staged (default), prefetch or plain (mlx_hands.transfer)
    MLX_HANDS_NO_KERNELS   "all" or a comma list of custom GPU kernels to leave off (mlx_hands.models.kernels)
    MLX_HANDS_COMPILE      0 or 1: mx.compile the forward passes (default: on a GPU only)
    MLX_HANDS_WARMUP       background (default) or foreground: how a GPU's first compile of a model happens
                           (mlx_hands.kernel_cache): in a background process while the forward runs uncompiled,
                           or in the first call itself
    MLX_PTX_CACHE_DIR      MLX's own variable: where GPU kernels are kept once compiled. mlx-hands points it at
                           <cache>/kernels/<mlx version> when it loads a model, unless it is set
    HF_HUB_OFFLINE         1: never ask the Hub, use its cache only (huggingface_hub's own variable)
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

TRANSFER_MODES = ("staged", "prefetch", "plain")
WARMUP_MODES = ("background", "foreground")


def cache_dir() -> Path:
    if os.environ.get("MLX_HANDS_CACHE"):
        return Path(os.environ["MLX_HANDS_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "mlx-hands"


def kernel_cache_dir() -> Path:
    """Where compiled GPU kernels live: MLX_PTX_CACHE_DIR if set, else <cache_dir()>/kernels/<mlx version> (kept
    across reboots, unlike MLX's default under /tmp). MLX keeps its fused kernels there, mlx-hands its own under
    mlx-hands/."""
    if os.environ.get("MLX_PTX_CACHE_DIR"):
        return Path(os.environ["MLX_PTX_CACHE_DIR"]).expanduser()
    try:
        version = importlib.metadata.version("mlx")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return cache_dir() / "kernels" / version


def warmup_mode() -> str:
    mode = os.environ.get("MLX_HANDS_WARMUP", "").strip() or "background"
    if mode not in WARMUP_MODES:
        raise ValueError(f"MLX_HANDS_WARMUP must be one of {', '.join(WARMUP_MODES)}, got {mode!r}")
    return mode


def transfer_mode() -> str:
    mode = os.environ.get("MLX_HANDS_TRANSFER", "").strip() or "staged"
    if mode not in TRANSFER_MODES:
        raise ValueError(f"MLX_HANDS_TRANSFER must be one of {', '.join(TRANSFER_MODES)}, got {mode!r}")
    return mode


def disabled_kernels(known: tuple[str, ...]) -> frozenset[str]:
    """The kernel names MLX_HANDS_NO_KERNELS turns off ("all" for every one of `known`)."""
    names = {n.strip() for n in os.environ.get("MLX_HANDS_NO_KERNELS", "").split(",") if n.strip()}
    unknown = names - set(known) - {"all"}
    if unknown:
        raise ValueError(f"MLX_HANDS_NO_KERNELS: unknown kernel name(s) {sorted(unknown)}; known: all, "
                         f"{', '.join(known)}")
    return frozenset(known) if "all" in names else frozenset(names)


def compile_override() -> bool | None:
    """MLX_HANDS_COMPILE as a bool, or None when unset."""
    value = os.environ.get("MLX_HANDS_COMPILE", "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"MLX_HANDS_COMPILE must be 0 or 1, got {value!r}")
    return None if value == "" else value == "1"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
