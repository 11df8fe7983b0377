"""Write a YOLOv8-pose parity fixture with real ultralytics (never a dependency of mlx_hands).

Builds a randomly initialised PoseModel (nc=2, kpt_shape [21, 3]; WiLoR's detector layout) at a
chosen scale, saves it the way ultralytics' strip_optimizer leaves a released checkpoint (fp16
model under "model", "train_args" with imgsz), then runs `YOLO(path)(image_bgr, conf=..., iou=...)`
on a few synthetic images and records:

  <out>.pt   the checkpoint (input of mlx_hands.convert.yolo.convert_detector)
  <out>.npz  per image i: image{i} (BGR uint8, as ultralytics received it), input{i} (the
             letterboxed network input, NHWC RGB uint8), raw{i} (fused model's Pose output,
             (1, 4+nc+63, A)), raw_unfused{i} (same from the unfused fp32 model), and for each
             NMS setting j: boxes{i}_{j} (N, 4) xyxy, scores / classes (N,), kpts{i}_{j} (N, 21, 3);
             settings (J, 3) = conf, iou, max_det.

Usage (in a scratch environment that has ultralytics==8.1.34, e.g. a venv with
--system-site-packages; --stub-torchvision when no torchvision build matches the local torch):

  python scripts/make_detector_golden.py --scale tiny --imgsz 128 -o tests/fixtures/detector_tiny
  python scripts/make_detector_golden.py --scale m --imgsz 640 -o /tmp/detector_m   # full size, not committed
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from copy import deepcopy
from pathlib import Path

import numpy as np

SETTINGS = ((0.3, 0.7, 300), (0.5, 0.45, 3))  # WiLoR's demo defaults; a stricter one to exercise max_det
SCALES = {"tiny": [0.33, 0.0625, 512], "m": [0.67, 0.75, 768]}


def stub_torchvision():
    """Install a pure-torch torchvision.ops.nms (greedy, IoU > thr suppressed, stable score order)."""
    import torch

    def nms(boxes, scores, iou_threshold):
        order = torch.sort(scores, stable=True, descending=True).indices
        b = boxes[order]  # float32 arithmetic, like the C++ kernel
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        lt = torch.maximum(b[:, None, :2], b[None, :, :2])
        rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        iou = inter / (area[:, None] + area[None, :] - inter)
        alive = torch.ones(len(order), dtype=torch.bool)
        keep = []
        for k in range(len(order)):
            if alive[k]:
                keep.append(k)
                alive &= ~(iou[k] > iou_threshold)
        return order[torch.tensor(keep, dtype=torch.int64)]

    class _Any:
        def __getattr__(self, name):
            return _Any()

        def __call__(self, *a, **k):
            return _Any()

    class ImageFolder:
        pass

    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.0.0+stub"
    tv.ops = types.ModuleType("torchvision.ops")
    tv.ops.nms = nms
    tv.transforms = types.ModuleType("torchvision.transforms")
    def _module_getattr(name):
        if name.startswith("__"):  # __file__, __path__ ...: inspect and importlib probe these
            raise AttributeError(name)
        return _Any()

    tv.transforms.__getattr__ = _module_getattr
    tv.datasets = types.ModuleType("torchvision.datasets")
    tv.datasets.ImageFolder = ImageFolder
    for mod in (tv, tv.ops, tv.transforms, tv.datasets):
        sys.modules[mod.__name__] = mod


def synthetic_images(rng: np.random.Generator) -> list[np.ndarray]:
    """Odd-sized BGR images with gradients, blocks and noise (letterbox pads on both axes, up and down)."""
    out = []
    for h, w in ((150, 100), (90, 200), (37, 53)):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
        for _ in range(4):
            y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
            img[y0 : y0 + rng.integers(4, h // 2), x0 : x0 + rng.integers(4, w // 2)] = rng.integers(0, 256, 3)
        img += rng.normal(0, 12, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def build_checkpoint(scale: str, imgsz: int, path: Path, seed: int):
    import torch
    from ultralytics import __version__
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import PoseModel, yaml_model_load
    from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_DICT

    torch.manual_seed(seed)
    cfg = yaml_model_load("yolov8m-pose.yaml")  # scale 'm' from the name, like WiLoR's training yaml
    cfg["nc"], cfg["kpt_shape"] = 2, [21, 3]
    cfg["scales"] = {**cfg["scales"], "tiny": SCALES["tiny"]}
    cfg["scale"] = scale
    model = PoseModel(cfg, nc=2, verbose=False)

    # BN statistics measured on synthetic images (features stay alive through the depth), then a random
    # affine so folding is exercised; head scales chosen so scores spread and some anchors pass conf 0.3.
    side = min(imgsz, 256)
    calib = torch.rand(4, 3, side, side) * torch.linspace(0.2, 1.0, side)[None, None, :, None]
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # cumulative average over the calibration batches
        for k in range(4):
            model(calib.roll(k * 7, dims=3))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.momentum = 0.03  # ultralytics' value
        head = model.model[-1]
        for seq in head.cv2:
            seq[-1].weight.mul_(10.0)
        for seq in head.cv3:
            seq[-1].weight.mul_(20.0)
            seq[-1].bias.uniform_(-3.0, -2.0)
    model.eval()

    model.names = {0: "left", 1: "right"}  # what PoseTrainer.set_model_attributes attaches
    model.kpt_shape = [21, 3]
    train_args = {**DEFAULT_CFG_DICT, "imgsz": imgsz, "task": "pose", "model": "yolov8m-pose.yaml"}
    model.args = get_cfg(DEFAULT_CFG, {"imgsz": imgsz, "task": "pose"})  # what the trainer attaches
    ckpt = {
        "date": "2024-01-01T00:00:00",
        "version": __version__,
        "train_args": train_args,
        "model": deepcopy(model).half(),
        "ema": None,
        "optimizer": None,
        "epoch": -1,
        "best_fitness": None,
        "updates": None,
    }
    for p in ckpt["model"].parameters():
        p.requires_grad = False
    torch.save(ckpt, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", required=True, help="output stem: writes <stem>.pt and <stem>.npz")
    ap.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stub-torchvision", action="store_true")
    args = ap.parse_args()
    if args.stub_torchvision:
        stub_torchvision()

    # ultralytics 8.1 calls torch.load without weights_only; torch >= 2.6 needs this for our own file.
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import attempt_load_one_weight

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    pt = out.with_suffix(".pt")
    build_checkpoint(args.scale, args.imgsz, pt, args.seed)

    images = synthetic_images(np.random.default_rng(args.seed))
    yolo = YOLO(str(pt))
    yolo(images[0], verbose=False)  # builds the predictor (fused AutoBackend)
    captured = {}

    def hook(module, inputs, output):
        captured["input"] = inputs[0].detach().clone()
        y = output[0] if isinstance(output, (list, tuple)) else output
        captured["raw"] = y.detach().clone()

    yolo.predictor.model.register_forward_hook(hook)
    unfused, _ = attempt_load_one_weight(str(pt))  # fp32, BN not folded, eval

    arrays = {"settings": np.array(SETTINGS, np.float64)}
    for i, img in enumerate(images):
        arrays[f"image{i}"] = img
        for j, (conf, iou, max_det) in enumerate(SETTINGS):
            r = yolo(img, conf=conf, iou=iou, max_det=int(max_det), verbose=False)[0]
            data = r.boxes.data.numpy()
            arrays[f"boxes{i}_{j}"] = data[:, :4].astype(np.float32)
            arrays[f"scores{i}_{j}"] = data[:, 4].astype(np.float32)
            arrays[f"classes{i}_{j}"] = data[:, 5].astype(np.int64)
            arrays[f"kpts{i}_{j}"] = r.keypoints.data.numpy().astype(np.float32).reshape(-1, 21, 3)
            if j == 0:
                x = captured["input"]
                x255 = (x * 255).round()
                assert torch.allclose(x255 / 255, x, atol=0, rtol=0), "network input is not k/255"
                arrays[f"input{i}"] = x255.permute(0, 2, 3, 1).numpy().astype(np.uint8)
                arrays[f"raw{i}"] = captured["raw"].numpy().astype(np.float32)
                with torch.no_grad():
                    arrays[f"raw_unfused{i}"] = unfused(x)[0].numpy().astype(np.float32)
            print(f"image {i} {img.shape} -> input {tuple(captured['input'].shape)}, setting {j}: {len(data)} boxes")
    np.savez_compressed(out.with_suffix(".npz"), **arrays)
    print(f"wrote {pt} ({pt.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.npz')}")


if __name__ == "__main__":
    main()
