"""End-to-end parity: WiLoR-mini's own pipeline (ultralytics detector, crops, PyTorch WiLoR, post-processing)
against mlx-hands on the same original files and images. Nothing of the reference is vendored: pass its path.

    python scripts/compare_pipeline.py --reference path/to/WiLoR-mini --weights path/with/pretrained_models \
        --images photo1.jpg photo2.jpg

`--weights` is the folder holding pretrained_models/{wilor_final.ckpt, mano_mean_params.npz, MANO_RIGHT.pkl,
detector.pt} (WiLoR-mini's layout), real or synthetic. `--synthetic DIR` writes such a folder first from the
test fixtures (reduced WiLoR, tiny random detector, procedural hand) and compares on it.

Needs, besides torch: ultralytics==8.1.34, smplx==0.1.28, roma, scikit-image (`pip install --no-deps` where
their own requirements would pull a CUDA torch), and chumpy for the real MANO_RIGHT.pkl. `--stub-torchvision`
replaces torchvision (which ultralytics imports) by a pure-torch NMS where no torchvision build fits the torch.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

FIELDS = {  # ours -> WiLoR-mini's wilor_preds key
    "keypoints_2d": "pred_keypoints_2d", "keypoints_3d": "pred_keypoints_3d", "vertices": "pred_vertices",
    "cam_t": "pred_cam_t_full", "global_orient": "global_orient", "hand_pose": "hand_pose", "betas": "betas",
}


def write_synthetic(dst: Path) -> dict:
    """pretrained_models/ from the test fixtures; returns the reduced WiLoR config's dict."""
    from reference_torch import write_smplx_mano
    from synth import write_torch_checkpoint

    g = np.load(ROOT / "tests" / "fixtures" / "wilor_tiny_golden.npz")
    folder = dst / "pretrained_models"
    folder.mkdir(parents=True, exist_ok=True)
    write_torch_checkpoint(folder / "wilor_final.ckpt", {k[6:]: g[k] for k in g.files if k.startswith("state/")})
    np.savez(folder / "mano_mean_params.npz", **{k[5:]: g[k] for k in g.files if k.startswith("mean/")})
    write_smplx_mano({k[5:]: g[k] for k in g.files if k.startswith("mano/")}, folder / "MANO_RIGHT.pkl")
    shutil.copy(ROOT / "tests" / "fixtures" / "detector_tiny.pt", folder / "detector.pt")
    return json.loads(str(g["config"]))


def reference_pipeline(reference: Path, weights: Path, config: dict | None):
    import torch

    from reference_torch import stub_timm

    stub_timm()
    # WiLoR-mini was written for torch <= 2.5, whose torch.load unpickled everything by default
    torch.load = functools.partial(torch.load, weights_only=False)
    sys.path.insert(0, str(reference))
    import wilor_mini.models.wilor as wilor_module
    from wilor_mini.models.refinement_net import RefineNet
    from wilor_mini.models.vit import ViT
    from wilor_mini.pipelines.wilor_hand_pose3d_estimation_pipeline import WiLorHandPose3dEstimationPipeline

    if config is not None:  # the reduced model of the synthetic files
        vit = config["vit"]

        def small_vit(**kw):
            return ViT(img_size=(256, 192), patch_size=16, embed_dim=vit["dim"], depth=vit["depth"],
                       num_heads=vit["num_heads"], ratio=1, mlp_ratio=4, qkv_bias=True, **kw)

        wilor_module.vit = small_vit
        wilor_module.RefineNet = lambda feat_dim, upscale: RefineNet(feat_dim=vit["dim"], upscale=upscale)
    return WiLorHandPose3dEstimationPipeline(wilor_pretrained_dir=str(weights), verbose=False)


def ours(weights: Path, config: dict | None, conf: float):
    from mlx_hands.config import WiLoRConfig
    from mlx_hands.convert import convert
    from mlx_hands.pipeline.runner import HandPosePipeline

    dst = weights / "mlx-hands"
    if not (dst / "config.json").exists():
        convert(weights, dst, config=WiLoRConfig.from_dict(config) if config else None)
    return HandPosePipeline.from_pretrained(dst, conf=conf)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", type=Path, required=True, help="checkout of warmshao/WiLoR-mini")
    p.add_argument("--weights", type=Path, help="folder holding pretrained_models/ with the original files")
    p.add_argument("--synthetic", type=Path, help="write synthetic originals here and use them")
    p.add_argument("--images", nargs="+", type=Path, required=True)
    p.add_argument("--conf", type=float, default=0.3)
    p.add_argument("--stub-torchvision", action="store_true")
    args = p.parse_args()
    if args.stub_torchvision:
        from make_detector_golden import stub_torchvision

        stub_torchvision()
    import os

    os.environ["MLX_ENABLE_TF32"] = "0"
    import cv2
    import torch

    torch.set_grad_enabled(False)
    config = write_synthetic(args.synthetic) if args.synthetic else None
    weights = args.synthetic or args.weights
    converted = weights / "mlx-hands" / "config.json"
    if config is None and converted.exists():  # a reduced model converted by an earlier --synthetic run
        config = json.loads(converted.read_text())["wilor"]
        config = None if config["vit"]["dim"] == 1280 else config
    ref = reference_pipeline(args.reference, weights, config)
    pipe = ours(weights, config, args.conf)

    worst: dict[str, float] = {}
    for path in args.images:
        bgr = cv2.imread(str(path))
        r = ref.predict(bgr, hand_conf=args.conf)  # WiLoR-mini takes BGR, as ultralytics does
        o = pipe(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        print(f"{path.name}: reference {len(r)} hands, mlx-hands {len(o)} hands")
        if len(r) != len(o):
            worst["hand count mismatch"] = worst.get("hand count mismatch", 0) + 1
            continue
        for i, (a, b) in enumerate(zip(r, o)):
            box = np.abs(np.asarray(a["hand_bbox"]) - b.box).max()
            side = int(a["is_right"]) == int(b.is_right)
            diffs = {"box": box}
            for ours_name, ref_name in FIELDS.items():
                x = np.asarray(getattr(b, ours_name), np.float64).reshape(-1)
                y = np.asarray(a["wilor_preds"][ref_name], np.float64).reshape(-1)
                diffs[ours_name] = float(np.abs(x - y).max())
            for k, v in diffs.items():
                worst[k] = max(worst.get(k, 0.0), v)
            print(f"  hand {i} {'right' if b.is_right else 'left'} side {'=' if side else 'DIFFERS'} "
                  + " ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    print("max abs differences (px for box/keypoints_2d, m for 3D and cam_t, rad for poses):")
    for k, v in worst.items():
        print(f"  {k:14s} {v:.3e}")


if __name__ == "__main__":
    main()
