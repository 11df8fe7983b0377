"""WiLoR Lightning checkpoint (wilor_final.ckpt) -> canonical MLX arrays.

Kept: `backbone.*` and `refine_net.*` (names unchanged). Ignored: training-only entries
(`discriminator.*`, loss modules, `initialized`), `num_batches_tracked`, and the `mano.*` buffers,
which come from the user's own MANO_RIGHT.pkl instead.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import numpy as np

from ..config import RefineNetConfig, WiLoRConfig

log = logging.getLogger(__name__)

KEPT_PREFIXES = ("backbone.", "refine_net.")
# Mean MANO parameters: buffers in the checkpoint, also shipped as mano_mean_params.npz.
MEAN_KEYS = {"backbone.init_hand_pose": "pose", "backbone.init_betas": "shape", "backbone.init_cam": "cam"}


def is_deconv(key: str) -> bool:
    # refine_net.deconv.deconv.<stage>.<layer>.weight where the layer is a ConvTranspose2d (index 0, 3, 6 ...)
    m = re.fullmatch(r"refine_net\.deconv\.deconv\.\d+\.(\d+)\.weight", key)
    return m is not None and int(m.group(1)) % 3 == 0


def infer_config(state: dict[str, np.ndarray], base: WiLoRConfig | None = None) -> WiLoRConfig:
    """Read the sizes the checkpoint was trained with; heads and everything else come from `base`."""
    base = base or WiLoRConfig()
    try:
        dim = state["backbone.pos_embed"].shape[-1]
        depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("backbone.blocks."))
        hidden = state["backbone.blocks.0.mlp.fc1.weight"].shape[0]
        stages = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("refine_net.deconv.deconv."))
    except (KeyError, ValueError) as e:
        raise ValueError(f"not a WiLoR state dict: cannot find {e} among its {len(state)} keys") from None
    vit = replace(base.vit, dim=dim, depth=depth, mlp_ratio=hidden / dim)
    upscale = base.refine_net.upscale if int(np.log2(base.refine_net.upscale)) + 1 == stages else 2 ** (stages - 1)
    return replace(base, vit=vit, refine_net=RefineNetConfig(feat_dim=dim, upscale=upscale))


def to_mlx_layout(key: str, w: np.ndarray) -> np.ndarray:
    if is_deconv(key):  # torch ConvTranspose2d (I, O, kH, kW) -> mlx (O, kH, kW, I)
        return w.transpose(1, 2, 3, 0)
    if w.ndim == 4:  # torch Conv2d (O, I, kH, kW) -> mlx (O, kH, kW, I)
        return w.transpose(0, 2, 3, 1)
    return w


def convert_wilor_state(
    state: dict[str, np.ndarray],
    expected: dict[str, tuple[int, ...]],
    mean_params: dict[str, np.ndarray] | None = None,
    source: str = "checkpoint",
) -> dict[str, np.ndarray]:
    """Map a WiLoR state dict (torch layout) onto the model's parameter names and shapes.

    expected: parameter name -> shape of the MLX model (without the "wilor." prefix). Unknown keys are
    ignored; missing or mis-shaped ones raise, naming them. mean_params (mano_mean_params.npz) fill the
    init_* buffers only where the checkpoint lacks them.
    """
    out: dict[str, np.ndarray] = {}
    ignored = []
    for key, w in state.items():
        if not key.startswith(KEPT_PREFIXES) or key.endswith("num_batches_tracked"):
            continue
        if key not in expected:
            ignored.append(key)
            continue
        out[key] = np.ascontiguousarray(to_mlx_layout(key, np.asarray(w)))
    for key, name in MEAN_KEYS.items():
        if key not in out and mean_params is not None and key in expected:
            out[key] = np.asarray(mean_params[name], np.float32).reshape(expected[key])
    if ignored:
        log.info("ignored %d unknown keys in %s, e.g. %s", len(ignored), source, ignored[:3])
    missing = sorted(set(expected) - set(out))
    if missing:
        more = f" (and {len(missing) - 8} more)" if len(missing) > 8 else ""
        raise ValueError(f"{source} is missing {len(missing)} WiLoR weights: {', '.join(missing[:8])}{more}")
    bad = [f"{k}: {out[k].shape} != expected {expected[k]}" for k in out if tuple(out[k].shape) != tuple(expected[k])]
    if bad:
        raise ValueError(f"{source} has mis-shaped WiLoR weights: " + "; ".join(bad[:8]))
    return out
