"""The one piece of glue around WiLoR-mini's PyTorch code (a checkout of warmshao/WiLoR-mini, fetched by the
user and passed by path; nothing of it is vendored). Used by scripts/make_golden.py (golden fixtures),
scripts/compare_pipeline.py (whole-route parity) and benchmarks/side_by_side.py (speed).

Needs torch, scipy, smplx==0.1.28 and roma (`pip install --no-deps smplx==0.1.28 roma`, beside torch==2.13.0).
"""

from __future__ import annotations

import pickle
import sys
import tempfile
import types
from pathlib import Path

import numpy as np


def stub_timm() -> None:
    """WiLoR-mini imports drop_path / to_2tuple / trunc_normal_ from timm, none of which acts at inference. timm
    itself needs a torchvision that matches torch, which PyPI's builds do not beside torch 2.13's CPU wheel, so
    these three stand in for it (only in this development script's process)."""
    import torch

    if "timm" in sys.modules:
        return
    layers = types.ModuleType("timm.models.layers")
    layers.drop_path = lambda x, drop_prob=0.0, training=False: x
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    def trunc_normal_(t, std=1.0, **_):
        with torch.no_grad():
            return t.normal_(0, std)

    layers.trunc_normal_ = trunc_normal_
    timm, models = types.ModuleType("timm"), types.ModuleType("timm.models")
    timm.models, models.layers = models, layers
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})


def write_smplx_mano(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Canonical MANO arrays (mlx_hands.weights.MANO_KEYS) in the pickle layout smplx.MANOLayer reads, with a
    sparse J_regressor as the release has it (smplx densifies it; the golden fixtures were made this way)."""
    import scipy.sparse

    V = arrays["v_template"].shape[0]
    parents = np.asarray(arrays["parents"]).astype(np.int64)
    data = {
        "v_template": arrays["v_template"].astype(np.float64),
        "shapedirs": arrays["shapedirs"].astype(np.float64),
        "posedirs": arrays["posedirs"].T.reshape(V, 3, -1).astype(np.float64),
        "J_regressor": scipy.sparse.csc_matrix(arrays["J_regressor"].astype(np.float64)),
        "weights": arrays["lbs_weights"].astype(np.float64),
        "kintree_table": np.stack([np.where(parents < 0, 2**32 - 1, parents), np.arange(len(parents))]).astype(np.int64),
        "f": arrays["faces"].astype(np.uint32),
        "hands_components": np.eye(45),
        "hands_mean": np.zeros(45),
    }
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)


def import_reference(reference: Path):
    """The WiLoR-mini modules from a checkout: (WiLor, ViT, RefineNet, MANO)."""
    reference = Path(reference)
    if not (reference / "wilor_mini" / "models" / "wilor.py").is_file():
        raise FileNotFoundError(f"{reference}: expected a WiLoR-mini checkout (wilor_mini/models/wilor.py)")
    stub_timm()
    if str(reference) not in sys.path:
        sys.path.insert(0, str(reference))
    from wilor_mini.models.mano_wrapper import MANO
    from wilor_mini.models.refinement_net import RefineNet
    from wilor_mini.models.vit import ViT
    from wilor_mini.models.wilor import WiLor

    return WiLor, ViT, RefineNet, MANO


def randomize(model, seed: int) -> None:
    """Seeded random weights with plausible magnitudes (BatchNorm statistics included), MANO and means kept."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.startswith("mano.") or "init_" in name or t.dtype not in (torch.float32,):
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif leaf == "running_mean":
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif "norm" in name and leaf == "weight" or (leaf == "weight" and t.ndim == 1):
                t.copy_(1 + torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.02)


def build_reference(reference: Path, config, mano: dict[str, np.ndarray], means: dict[str, np.ndarray],
                    seed: int = 0, randomized: bool = True, stats_dtype: str = "float32"):
    """WiLoR-mini's WiLor for an mlx_hands WiLoRConfig, with `mano` (canonical arrays) and the MANO `means`
    ({"pose" (96,), "shape" (10,), "cam" (3,)}); seeded random weights when `randomized`, else torch's
    default init. float32, eval mode, on the CPU. stats_dtype: of the ImageNet mean/std it normalises with
    (float64 for golden fixtures, the run dtype for timing)."""
    import torch
    from torch import nn

    WiLor, ViT, RefineNet, MANO = import_reference(reference)
    v = config.vit
    model = WiLor.__new__(WiLor)
    nn.Module.__init__(model)
    with tempfile.TemporaryDirectory() as tmp:
        mano_pkl, mean_npz = Path(tmp) / "MANO_RIGHT.pkl", Path(tmp) / "mano_mean_params.npz"
        write_smplx_mano(mano, mano_pkl)
        np.savez(mean_npz, **means)
        torch.manual_seed(seed)
        model.backbone = ViT(img_size=tuple(v.image_size), patch_size=v.patch_size, embed_dim=v.dim, depth=v.depth,
                             num_heads=v.num_heads, ratio=1, mlp_ratio=v.mlp_ratio, qkv_bias=True,
                             mano_mean_path=str(mean_npz))
        model.refine_net = RefineNet(feat_dim=config.refine_net.feat_dim, upscale=config.refine_net.upscale)
        model.mano = MANO(model_path=str(mano_pkl), create_body_pose=False)
    model.FOCAL_LENGTH, model.IMAGE_SIZE = config.focal_length, config.image_size
    dtype = getattr(torch, stats_dtype)
    model.IMAGE_MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=dtype).reshape(1, 1, 1, 3)
    model.IMAGE_STD = torch.tensor([0.229, 0.224, 0.225], dtype=dtype).reshape(1, 1, 1, 3)
    if randomized:
        randomize(model, seed)
    return model.eval()
