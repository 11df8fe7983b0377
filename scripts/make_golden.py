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
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from reference_torch import build_reference  # noqa: E402 (scripts/, beside this file)

OTHER_FOCAL = 50.0  # small enough that the mesh depth matters next to tz = 2F/(size s)
SIZES = {
    "tiny": dict(dim=64, depth=2, num_heads=4),
    "full": dict(dim=1280, depth=32, num_heads=16),
}


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

    from mlx_hands.config import WiLoRConfig

    torch.set_grad_enabled(False)
    mano = make_mano(seed=args.seed)
    means = mean_params(args.seed)
    config = {"vit": {k: v for k, v in SIZES[args.size].items()}, "refine_net": {"feat_dim": SIZES[args.size]["dim"]}}
    ref = build_reference(args.reference, WiLoRConfig.from_dict(config), mano, means, args.seed, stats_dtype="float64")
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
