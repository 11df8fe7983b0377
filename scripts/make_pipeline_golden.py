"""Run the reference WiLoR-mini image route (crop, blur, flip, warp, un-mirroring, cam_crop_to_full, projection)
around a fake network and save a small golden fixture for tests/test_pipeline.py.

    python scripts/make_pipeline_golden.py --reference /path/to/WiLoR-mini \
        --out tests/fixtures/pipeline_golden.npz

The reference (fetched separately, never committed) is imported from the given path and its real
`WiLorHandPose3dEstimationPipeline.predict_with_bboxes` runs unchanged, with its network replaced by a fake that
records the crops it receives and returns seeded random outputs; `ultralytics` is stubbed (the detector is not
used) and so is the network module (no MANO, no weights). Needs torch and scikit-image (test-only tools:
`pip install scikit-image`; never a dependency of mlx-hands).

The reference is fed BGR (cv2.imread order) and its crops are stored back in RGB order, the order of our
route; the network sees the same pixels either way (WiLoR-mini reverses the channels inside its forward).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
from pathlib import Path

import numpy as np

H, W = 384, 512
RESCALE = 2.5
# x1, y1, x2, y2 and side. 0: small right hand (no blur, uint8 crop); 1: large left hand at the left edge (blur,
# mirrored, black border); 2: large right hand at the bottom-right corner (blur, black border);
# 3: small left hand (no blur, mirrored).
BOXES = np.array(
    [
        [300.4, 60.2, 362.9, 141.7],
        [-12.3, 90.6, 262.8, 352.1],
        [250.7, 120.2, 511.0, 383.0],
        [200.25, 250.5, 259.75, 300.0],
    ]
)
IS_RIGHT = [1, 0, 1, 0]
FOCALS = (5000.0, 900.0)  # the reference's focal_length (crop units): default and a non-default one


def synthetic_image(seed: int = 7) -> np.ndarray:
    """A textured RGB uint8 image: oriented sinusoids, a colour ramp, a few sharp-edged discs, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    r = 128 + 80 * np.sin(x / 9.0) * np.cos(y / 13.0)
    g = 128 + 90 * np.sin((x + 2 * y) / 17.0)
    b = 40 + 170 * (x / W) * (1 - y / H) + 30 * np.cos(x / 5.0)
    img = np.stack([r, g, b], axis=-1)
    for _ in range(12):
        cx, cy, rad = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(8, 40)
        img[(x - cx) ** 2 + (y - cy) ** 2 < rad**2] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def fake_outputs(n: int, seed: int = 3) -> dict[str, np.ndarray]:
    """Plausible random WiLoR outputs: hand-sized 3D points, a camera that keeps the hand in front."""
    rng = np.random.default_rng(seed)
    return {
        "pred_cam": np.stack([rng.uniform(4, 9, n), rng.uniform(-0.2, 0.2, n), rng.uniform(-0.2, 0.2, n)], 1),
        "pred_keypoints_3d": rng.normal(0, 0.04, (n, 21, 3)),
        "pred_vertices": rng.normal(0, 0.04, (n, 778, 3)),
        "global_orient": rng.normal(0, 1.0, (n, 1, 3)),
        "hand_pose": rng.normal(0, 0.5, (n, 15, 3)),
        "betas": rng.normal(0, 1.0, (n, 10)),
    }


def import_reference(ref: Path):
    """Import WiLoR-mini's pipeline module with ultralytics and the network module stubbed."""
    ultra = types.ModuleType("ultralytics")
    ultra.YOLO = object
    sys.modules.setdefault("ultralytics", ultra)
    net = types.ModuleType("wilor_mini.models.wilor")
    net.WiLor = object
    sys.modules["wilor_mini.models.wilor"] = net
    sys.path.insert(0, str(ref))
    from wilor_mini.pipelines import wilor_hand_pose3d_estimation_pipeline as mod

    return mod


def run_reference(mod, image_bgr: np.ndarray, outputs: dict, focal: float):
    import torch

    seen = {}

    def fake_net(patches):
        seen["crops"] = patches.detach().cpu().numpy().copy()
        return {k: torch.from_numpy(v.astype(np.float32)) for k, v in outputs.items()}

    pipe = object.__new__(mod.WiLorHandPose3dEstimationPipeline)
    pipe.verbose = False
    pipe.logger = logging.getLogger("reference")
    pipe.device, pipe.dtype = torch.device("cpu"), torch.float32
    pipe.FOCAL_LENGTH, pipe.IMAGE_SIZE = focal, 256
    pipe.wilor_model = fake_net
    rets = pipe.predict_with_bboxes(image_bgr, BOXES.copy(), list(IS_RIGHT), rescale_factor=RESCALE)
    return seen["crops"], [r["wilor_preds"] for r in rets]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", required=True, type=Path, help="WiLoR-mini checkout (read-only)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/fixtures/pipeline_golden.npz")
    args = p.parse_args()

    import cv2
    import skimage

    mod = import_reference(args.reference)
    image = synthetic_image()
    outputs = fake_outputs(len(BOXES))
    fixture = {"image_rgb": image, "boxes": BOXES, "is_right": np.array(IS_RIGHT), "focals": np.array(FOCALS)}
    fixture.update({f"in_{k}": v.astype(np.float32) for k, v in outputs.items()})
    for j, focal in enumerate(FOCALS):
        crops_bgr, preds = run_reference(mod, np.ascontiguousarray(image[:, :, ::-1]), outputs, focal)
        cat = {k: np.concatenate([p[k] for p in preds]) for k in preds[0] if k != "scaled_focal_length"}
        fixture[f"f{j}_cam_t"] = cat["pred_cam_t_full"]
        fixture[f"f{j}_keypoints_2d"] = cat["pred_keypoints_2d"]
        fixture[f"f{j}_scaled_focal"] = np.array([p["scaled_focal_length"] for p in preds])
        if j == 0:
            crops = crops_bgr[..., ::-1]  # stored in RGB order, like our route's crops
            # Rounded to uint8 to keep the file small, plus two rows at full precision.
            fixture["crops_u8"] = np.clip(np.round(crops), 0, 255).astype(np.uint8)
            fixture["crop_rows"] = crops[:, [37, 128]].astype(np.float32)
            fixture["crop_row_index"] = np.array([37, 128])
            for k in ("pred_cam", "pred_keypoints_3d", "pred_vertices", "global_orient", "hand_pose", "betas"):
                fixture[f"out_{k}"] = cat[k]
    fixture["meta"] = np.array(
        json.dumps(
            {
                "reference": "warmshao/WiLoR-mini predict_with_bboxes",
                "rescale_factor": RESCALE,
                "crop_channel_order": "RGB",
                "opencv": cv2.__version__,
                "scikit-image": skimage.__version__,
                "numpy": np.__version__,
            }
        )
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **fixture)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
