"""Run the reference WiLoR-mini model (fetched separately; its path is passed in, never committed) on
seeded random weights and a synthetic MANO hand, and save a small golden fixture for tests/test_parity.py.

    python scripts/make_golden.py --reference /path/to/WiLoR-mini --out tests/fixtures/wilor_tiny_golden.npz
    python scripts/make_golden.py --reference /path/to/WiLoR-mini --size full --compare   # full-size parity

Needs torch, smplx==0.1.28 and roma (test-only tools; `pip install --no-deps smplx==0.1.28 roma`). timm is
stubbed: the reference imports only drop_path/to_2tuple/trunc_normal_ from it, none of which act at eval.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

OTHER_FOCAL = 50.0  # small enough that the mesh depth matters next to tz = 2F/(size s)
SIZES = {
    "tiny": dict(dim=64, depth=2, num_heads=4),
    "full": dict(dim=1280, depth=32, num_heads=16),
}


def stub_timm():
    import torch

    def drop_path(x, drop_prob=0.0, training=False):
        return x

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    def trunc_normal_(t, std=1.0, **_):
        with torch.no_grad():
            return t.normal_(0, std)

    layers = types.ModuleType("timm.models.layers")
    layers.drop_path, layers.to_2tuple, layers.trunc_normal_ = drop_path, to_2tuple, trunc_normal_
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    timm.models, models.layers = models, layers
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})


def write_smplx_mano(arrays: dict, path: Path) -> None:
    """The synthetic hand in the pickle layout smplx reads (plain arrays, sparse J_regressor)."""
    import scipy.sparse

    V = arrays["v_template"].shape[0]
    data = {
        "v_template": arrays["v_template"].astype(np.float64),
        "shapedirs": arrays["shapedirs"].astype(np.float64),
        "posedirs": arrays["posedirs"].T.reshape(V, 3, -1).astype(np.float64),
        "J_regressor": scipy.sparse.csc_matrix(arrays["J_regressor"].astype(np.float64)),
        "weights": arrays["lbs_weights"].astype(np.float64),
        "kintree_table": np.stack([np.where(arrays["parents"] < 0, 2**32 - 1, arrays["parents"]),
                                   np.arange(len(arrays["parents"]))]).astype(np.int64),
        "f": arrays["faces"].astype(np.uint32),
        "hands_components": np.eye(45),
        "hands_mean": np.zeros(45),
    }
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)


def randomize(model, seed: int) -> None:
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


def build_reference(reference: Path, size: dict, mano_pkl: Path, mean_npz: Path, seed: int):
    import torch
    from torch import nn

    stub_timm()
    sys.path.insert(0, str(reference))
    from wilor_mini.models.mano_wrapper import MANO
    from wilor_mini.models.refinement_net import RefineNet
    from wilor_mini.models.vit import ViT
    from wilor_mini.models.wilor import WiLor

    model = WiLor.__new__(WiLor)
    nn.Module.__init__(model)
    model.backbone = ViT(img_size=(256, 192), patch_size=16, embed_dim=size["dim"], depth=size["depth"],
                         num_heads=size["num_heads"], ratio=1, mlp_ratio=4, qkv_bias=True,
                         mano_mean_path=str(mean_npz))
    model.refine_net = RefineNet(feat_dim=size["dim"], upscale=3)
    model.mano = MANO(model_path=str(mano_pkl), create_body_pose=False)
    model.FOCAL_LENGTH, model.IMAGE_SIZE = 5000, 256
    model.IMAGE_MEAN = torch.from_numpy(np.array([0.485, 0.456, 0.406]).reshape(1, 1, 1, 3))
    model.IMAGE_STD = torch.from_numpy(np.array([0.229, 0.224, 0.225])).reshape(1, 1, 1, 3)
    randomize(model, seed)
    return model.eval()


def make_inputs(batch: int, seed: int) -> np.ndarray:
    """Smooth random RGB crops (a few blobs), uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256] / 256.0
    crops = np.zeros((batch, 256, 256, 3))
    for b in range(batch):
        for _ in range(6):
            c, r = rng.uniform(0, 1, 2), rng.uniform(0.05, 0.3)
            blob = np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / r**2)
            crops[b] += blob[..., None] * rng.uniform(0, 255, 3)
    crops += rng.normal(0, 8, crops.shape)
    return np.clip(crops, 0, 255).astype(np.uint8)


def mean_params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pose = np.tile(np.array([1.0, 0, 0, 0, 1.0, 0]), 16) + rng.normal(0, 0.3, 96)
    return {"pose": pose.astype(np.float32), "shape": rng.normal(0, 0.5, 10).astype(np.float32),
            "cam": np.array([0.9, 0.03, -0.02], np.float32)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, type=Path, help="checkout of warmshao/WiLoR-mini")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the golden fixture here")
    p.add_argument("--compare", action="store_true", help="also run mlx-hands here and print the differences")
    args = p.parse_args()

    import torch
    from synth import make_mano

    torch.set_grad_enabled(False)
    mano = make_mano(seed=args.seed)
    means = mean_params(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        mano_pkl, mean_npz = Path(tmp) / "MANO_RIGHT.pkl", Path(tmp) / "mano_mean_params.npz"
        write_smplx_mano(mano, mano_pkl)
        np.savez(mean_npz, **means)
        ref = build_reference(args.reference, SIZES[args.size], mano_pkl, mean_npz, args.seed)
    crops = make_inputs(args.batch, args.seed)
    # WiLoR-mini takes BGR crops and reverses the channels inside forward(); ours are RGB
    t0 = time.perf_counter()
    out = ref(torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).float())
    print(f"reference forward: {time.perf_counter() - t0:.2f} s")
    out = {k: v.numpy() for k, v in out.items()}
    # WiLoR-mini's focal_length setting also reaches RefineNet's projection
    ref.FOCAL_LENGTH = OTHER_FOCAL
    out_focal = {k: v.numpy() for k, v in ref(torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).float()).items()}
    ref.FOCAL_LENGTH = 5000
    state = {k: v.numpy() for k, v in ref.state_dict().items() if not k.startswith("mano.")}
    config = {"vit": {k: v for k, v in SIZES[args.size].items()}, "refine_net": {"feat_dim": SIZES[args.size]["dim"]}}

    if args.out:
        fixture = {f"state/{k}": v for k, v in state.items()}
        fixture.update({f"mano/{k}": v for k, v in mano.items()})
        fixture.update({f"mean/{k}": v for k, v in means.items()})
        fixture.update({f"out/{k}": v for k, v in out.items()})
        fixture.update({f"out_focal/{k}": v for k, v in out_focal.items()})
        fixture["other_focal"] = np.array(OTHER_FOCAL)
        fixture["crops"] = crops
        fixture["config"] = np.array(json.dumps(config))
        np.savez_compressed(args.out, **fixture)
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")

    if args.compare:
        import mlx.core as mx

        from mlx_hands.config import WiLoRConfig
        from mlx_hands.convert.wilor import convert_wilor_state
        from mlx_hands.models.wilor import WiLoR
        from mlx_hands.weights import load_weights_strict, parameter_shapes

        model = WiLoR(WiLoRConfig.from_dict(config))
        arrays = convert_wilor_state(state, parameter_shapes(model), means)
        load_weights_strict(model, {k: mx.array(v) for k, v in arrays.items()}, "reference state")
        model.mano.set_data(mano)
        t0 = time.perf_counter()
        ours = model(mx.array(crops)).to_dict()
        mx.eval(ours)
        print(f"mlx forward: {time.perf_counter() - t0:.2f} s")
        for k in ("pred_vertices", "pred_keypoints_3d", "pred_cam", "betas", "global_orient", "hand_pose"):
            d = np.abs(np.array(ours[k]) - out[k]).max()
            print(f"{k:18s} max abs diff {d:.3e}   (reference max |x| {np.abs(out[k]).max():.3f})")


if __name__ == "__main__":
    main()
