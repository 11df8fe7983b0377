"""Tracking mode (pipeline.stream.HandStream) against the detector on every frame: speed, drift, jitter, flips.

Two parts, because there are no trained weights here:

- `quality`: the tracking logic on a scene whose truth is known. Two hands move on smooth paths through a
  1280x720 view (30 fps; the left hand is hidden for 1 s from 8.1 s, as by an occlusion). Both networks are
  STAND-INS, not WiLoR: the "detector" returns each visible hand's true box padded 1.25x, with frame-to-frame
  box noise, a wrong left/right class on `--flip-rate` of its detections and a missed hand on 2%; the "WiLoR"
  returns, for the hand inside the box it is given, the true keypoints plus an error that depends on the crop
  (5% of the hand's offset from the box centre, 3% x log of the box's scale error) plus white noise (0.5% of
  the box side per coordinate in 2D, 2 mm per joint in 3D, 1% in depth). Run with the wrong side (left crops
  are mirrored), it returns the mirror image of the hand, as WiLoR does; with no hand in the box, a plausible
  hand centred in the box at its scale (the hardest case for the tracking checks: nothing looks wrong).
  The numbers say what the tracking logic does with such inputs: how far tracking moves results from
  detection-every-frame, how much smoothing and the lock remove, how long a hidden hand leaves a ghost.
  They are not WiLoR's accuracy.
- `speed`: the real networks (random weights; tiny or full size) on 1280x720 frames of the same scene. The
  detector and WiLoR run for real (crops, forward, post-processing); only the values that steer the tracker
  (the detector's boxes, WiLoR's keypoints) are replaced by the stand-ins' so that tracking proceeds as with
  a real hand. Per-frame latency is measured around `stream(frame, t)` (detector when it runs, WiLoR, tracking,
  smoothing; not decoding or drawing).

With real weights (`--model DIR`) nothing is replaced: `--clip video.mp4` (or `--photo hand.jpg`, moved along
a smooth path into a clip) runs through the real detector and WiLoR, and the same tables are printed, less
the errors against a truth there is none of.

    python benchmarks/tracking.py quality [--seconds 20] [--flip-rate 0.1] [--json out.json]
    python benchmarks/tracking.py speed --size tiny --frames 60
    python benchmarks/tracking.py speed --size full --frames 12 --warmup 2
    python benchmarks/tracking.py quality --model DIR --clip hands.mp4      # real weights
    python benchmarks/tracking.py speed --model DIR --clip hands.mp4 --frames 600
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlx_hands.blas import use_system_blas  # noqa: E402

use_system_blas()  # before mlx is imported (Linux CPU: OpenBLAS instead of the reference BLAS)

from mlx_hands.pipeline.detection import Detections  # noqa: E402
from mlx_hands.pipeline.stream import HandStream  # noqa: E402
from mlx_hands.pipeline.tracking import box_iou  # noqa: E402
from mlx_hands.types import Hand  # noqa: E402

W, H, FPS = 1280, 720, 30.0
FOCAL = 1000.0  # pixels: a webcam's (about 65 degrees across 1280 px)
BOX_PAD = 1.25  # the stand-in detector's box / keypoint extent
HIDDEN = (8.1, 9.1)  # seconds during which the left hand is hidden (not on a detection frame)


# ------------------------------------------------------------------------------------------- the scene
def hand_template() -> tuple[np.ndarray, np.ndarray]:
    """A right hand, palm to the camera, fingers up (-y): 21 joints (OpenPose order) and a 778-point surface
    (rings of 3 points, 8 mm around each bone) rigid with them; metres, wrist at the origin."""
    bases = {"thumb": (0.028, -0.025), "index": (0.024, -0.09), "middle": (0.002, -0.095), "ring": (-0.018, -0.09),
             "pinky": (-0.036, -0.08)}
    lengths = {"thumb": (0.035, 0.032, 0.028), "index": (0.042, 0.026, 0.022), "middle": (0.046, 0.029, 0.023),
               "ring": (0.043, 0.027, 0.022), "pinky": (0.033, 0.021, 0.019)}
    dirs = {"thumb": np.array([0.75, -0.66, 0.0]), "index": np.array([0.08, -1, 0]), "middle": np.array([0, -1, 0.0]),
            "ring": np.array([-0.08, -1, 0]), "pinky": np.array([-0.18, -1, 0])}
    joints = [np.zeros(3)]
    for name in ("thumb", "index", "middle", "ring", "pinky"):
        p = np.array([*bases[name], 0.0])
        joints.append(p)
        d = dirs[name] / np.linalg.norm(dirs[name])
        for seg in lengths[name]:
            p = p + d * seg
            joints.append(p)
    joints = np.array(joints)
    bones = [(0 if j % 4 == 1 else j - 1, j) for j in range(1, 21)]
    ring = 0.008 * np.array([[1, 0, 0], [-0.5, 0, 0.87], [-0.5, 0, -0.87]])
    surface = np.concatenate([joints[a] + (joints[b] - joints[a]) * s + ring for a, b in bones
                              for s in np.linspace(0, 1, 13)])[:778]
    return joints, surface


JOINTS, SURFACE = hand_template()


def rot(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    return (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))


def project(points: np.ndarray) -> np.ndarray:
    return FOCAL * points[:, :2] / points[:, 2:] + [W / 2, H / 2]


@dataclasses.dataclass
class TrueHand:
    name: str
    is_right: bool
    cam_t: np.ndarray  # (3,) wrist in the camera, metres
    joints: np.ndarray  # (21, 3) relative to cam_t
    surface: np.ndarray  # (778, 3) relative to cam_t

    @property
    def keypoints_2d(self) -> np.ndarray:
        return project(self.joints + self.cam_t)

    @property
    def box(self) -> np.ndarray:
        kp = self.keypoints_2d
        c, half = (kp.min(0) + kp.max(0)) / 2, (kp.max(0) - kp.min(0)) * BOX_PAD / 2
        return np.concatenate([c - half, c + half])


def scene(t: float) -> list[TrueHand]:
    """The true hands at time t (seconds): smooth Lissajous paths (up to 300 px/s), depth 1.15-1.45 m (boxes of
    about 140-210 px, as in `mlx-hands bench`'s route: crops under 563 px, so no anti-alias blur) and wrist turns."""
    hands = []
    for name, is_right, phase, x0 in (("A", True, 0.0, 0.25), ("B", False, 1.3, -0.25)):
        if name == "B" and HIDDEN[0] <= t < HIDDEN[1]:
            continue
        w = 2 * math.pi
        cam_t = np.array([x0 + 0.2 * math.sin(w * t / 5.0 + phase), 0.1 + 0.12 * math.sin(w * t / 3.7 + phase),
                          1.3 + 0.15 * math.sin(w * t / 7.0 + phase)])
        R = rot(0.3 * math.sin(w * t / 4.3 + phase), 0.5 * math.sin(w * t / 6.1 + phase), 0.35 * math.sin(w * t / 3.1))
        mirror = np.array([1.0, 1.0, 1.0]) if is_right else np.array([-1.0, 1.0, 1.0])
        hands.append(TrueHand(name, is_right, cam_t, (JOINTS * mirror) @ R.T, (SURFACE * mirror) @ R.T))
    return hands


def frame_time(img: np.ndarray) -> float:
    """The scene time a frame was made for (encoded in its first pixels by make_frame)."""
    return (int(img[0, 0, 0]) + 256 * int(img[0, 0, 1])) / FPS


def make_frame(k: int, background: np.ndarray) -> np.ndarray:
    img = background.copy()
    img[0, 0, :2] = k % 256, k // 256
    return img


# ------------------------------------------------------------------------------------------- stand-in networks
class StandIns:
    """The stand-in detector and WiLoR described in the module docstring. Deterministic per (frame, box)."""

    def __init__(self, flip_rate: float, miss_rate: float = 0.02, seed: int = 0):
        self.flip_rate, self.miss_rate, self.seed = flip_rate, miss_rate, seed

    def _rng(self, *key) -> np.random.Generator:
        return np.random.default_rng([self.seed, *[int(round(k * 1000)) % (2**31) for k in key]])

    def detect(self, t: float) -> Detections:
        rng = self._rng(t, 1)
        boxes, scores, classes = [], [], []
        for h in scene(t):
            b = h.box
            side = b[2:] - b[:2]
            if rng.random() < self.miss_rate:
                continue
            c = (b[:2] + b[2:]) / 2 + rng.normal(0, 0.015, 2) * side  # box noise of a detector, frame to frame
            half = side / 2 * (1 + rng.normal(0, 0.02))
            boxes.append(np.clip(np.concatenate([c - half, c + half]), 0, [W, H, W, H]))
            flip = rng.random() < self.flip_rate
            classes.append(int(h.is_right != flip))
            scores.append(0.9)
        n = len(boxes)
        return Detections(np.reshape(boxes, (n, 4)).astype(np.float32), np.array(scores, np.float32),
                          np.array(classes, np.int64), np.zeros((n, 21, 3), np.float32))

    def wilor(self, t: float, box: np.ndarray, is_right: bool) -> dict:
        """-> keypoints_2d, keypoints_3d, vertices, cam_t for a box (see the module docstring)."""
        rng = self._rng(t, *box, 2)
        side = float(np.max(box[2:] - box[:2]))
        centre = (box[:2] + box[2:]) / 2
        inside = [h for h in scene(t) if np.all((h.box[:2] + h.box[2:]) / 2 >= box[:2])
                  and np.all((h.box[:2] + h.box[2:]) / 2 <= box[2:])]
        if inside:
            h = min(inside, key=lambda x: np.linalg.norm((x.box[:2] + x.box[2:]) / 2 - centre))
            joints, surface, cam_t = h.joints.copy(), h.surface.copy(), h.cam_t.copy()
            if is_right != h.is_right:  # mirrored crop: the mirror image of the hand about its wrist
                joints[:, 0], surface[:, 0] = -joints[:, 0], -surface[:, 0]
            kp = project(joints + cam_t)
            true_c = (h.box[:2] + h.box[2:]) / 2
            true_side = float(np.max(h.box[2:] - h.box[:2]))
            kp = kp - 0.05 * (true_c - centre) + 0.03 * math.log(side / true_side) * (kp - true_c)
        else:  # no hand in the crop: a plausible hand where the box says, at its scale
            depth = FOCAL * 0.19 * BOX_PAD / side
            wrist = centre + [0, side * 0.3]
            cam_t = np.array([(wrist[0] - W / 2) * depth / FOCAL, (wrist[1] - H / 2) * depth / FOCAL, depth])
            m = 1.0 if is_right else -1.0
            joints, surface = JOINTS * [m, 1, 1], SURFACE * [m, 1, 1]
            kp = project(joints + cam_t) + rng.normal(0, 0.05 * side, 2)
        kp = kp + rng.normal(0, 0.005 * side, kp.shape)
        noise3 = rng.normal(0, 0.002, joints.shape)
        cam_t = cam_t * [1, 1, 1 + rng.normal(0, 0.01)]
        return {"keypoints_2d": kp, "keypoints_3d": joints + noise3, "cam_t": cam_t,
                "vertices": surface + noise3[np.arange(len(surface)) % 21]}


def hand_record(box, is_right, confidence, fields: dict) -> Hand:
    return Hand(is_right=bool(is_right), confidence=float(confidence), box=np.asarray(box, np.float64),
                keypoints_2d=fields["keypoints_2d"], keypoints_3d=fields["keypoints_3d"], cam_t=fields["cam_t"],
                focal_length=FOCAL, global_orient=np.zeros(3), hand_pose=np.zeros((15, 3)), betas=np.zeros(10),
                crop_cam=np.array([1.0, 0.0, 0.0]), vertices=fields["vertices"])


class StandInPipe:
    """detect / predict_with_boxes of a HandPosePipeline, answered by the stand-ins."""

    conf = 0.3

    def __init__(self, standins: StandIns):
        self.s = standins

    def detect(self, img):
        return self.s.detect(frame_time(img))

    def predict_with_boxes(self, img, boxes, is_right, *, confidence=None, include_vertices=True):
        t = frame_time(img)
        conf = np.ones(len(boxes)) if confidence is None else confidence
        return [hand_record(b, r, c, self.s.wilor(t, np.asarray(b, np.float64), bool(r)))
                for b, r, c in zip(boxes, is_right, conf)]


class SteeredPipe:
    """A real HandPosePipeline whose networks run for real; the values that steer the tracker come from the
    stand-ins (so that random weights track like a real hand)."""

    def __init__(self, pipe, standins: StandIns):
        self.pipe, self.s = pipe, standins
        self.conf = pipe.conf

    def detect(self, img):
        self.pipe.detect(img)  # the real network, decoding and NMS; its (random) answer is not used
        return self.s.detect(frame_time(img))

    def predict_with_boxes(self, img, boxes, is_right, *, confidence=None, include_vertices=True):
        hands = self.pipe.predict_with_boxes(img, boxes, is_right, confidence=confidence,
                                             include_vertices=include_vertices)
        t = frame_time(img)
        return [dataclasses.replace(h, **self.s.wilor(t, np.asarray(h.box, np.float64), h.is_right)) for h in hands]


# ------------------------------------------------------------------------------------------- metrics
CONFIGS = {  # name -> HandStream options
    "detect every frame, no lock, raw": dict(track=False, handedness_lock=1, smooth=False),
    "detect every frame, lock 3, raw": dict(track=False, handedness_lock=3, smooth=False),
    "detect every frame, lock 3, smoothed": dict(track=False, handedness_lock=3, smooth=True),
    "tracking (detect every 10), lock 3, raw": dict(detect_every=10, handedness_lock=3, smooth=False),
    "tracking (detect every 10), lock 3, smoothed": dict(detect_every=10, handedness_lock=3, smooth=True),
    "tracking, max 2 hands, lock 3, smoothed": dict(detect_every=10, max_hands=2, handedness_lock=3, smooth=True),
}
REFERENCE = "detect every frame, lock 3, raw"


def camera_points(h: Hand, name: str) -> np.ndarray:
    return np.asarray(getattr(h, name), np.float64) + np.asarray(h.cam_t, np.float64)


def high_pass_rms(series: list[np.ndarray]) -> float:
    """RMS over time and points of x_t - (x_{t-1} + x_{t+1}) / 2 (constant-velocity motion gives 0), as the
    Euclidean length per point; series: consecutive frames of one track, (P, D) each."""
    if len(series) < 3:
        return float("nan")
    x = np.stack(series)
    r = x[1:-1] - (x[:-2] + x[2:]) / 2
    return float(np.sqrt(np.mean(np.sum(r ** 2, axis=-1))))


def run_config(pipe, frames, options: dict, stages: list | None = None
               ) -> tuple[list[list[Hand]], list[float], list[bool]]:
    """Run a HandStream over frames -> hands, latency (s) and whether the detector ran, per frame. stages: a list
    that receives per frame the stream's stage times and the pipeline's own (crop, model, post), in s."""
    stream = HandStream(pipe, **options)
    inner = getattr(pipe, "pipe", pipe)
    out, latency, detected = [], [], []
    for k, t, img in frames:
        t0 = time.perf_counter()
        hands = stream(img, t)
        latency.append(time.perf_counter() - t0)
        detected.append(bool(stream.last_timings.get("detect")))
        out.append(hands)
        if stages is not None:
            pipe_t = getattr(inner, "last_timings", {})
            stages.append({**stream.last_timings, **{f"pipe_{k}": pipe_t.get(k, 0.0) for k in ("crop", "model", "post")}})
    return out, latency, detected


def track_series(run: list[list[Hand]]) -> dict[int, list[tuple[int, Hand]]]:
    series: dict[int, list[tuple[int, Hand]]] = {}
    for k, hands in enumerate(run):
        for h in hands:
            series.setdefault(h.track_id, []).append((k, h))
    return series


def jitter(run) -> dict[str, float]:
    """High-pass RMS of 2D keypoints (px) and 3D joints in the camera (mm), over runs of consecutive frames."""
    px, mm, weights = [], [], []
    for items in track_series(run).values():
        chunks, cur = [], [items[0]]
        for a, b in zip(items, items[1:]):
            if b[0] == a[0] + 1 and b[1].is_right == a[1].is_right:
                cur.append(b)
            else:
                chunks.append(cur)
                cur = [b]
        chunks.append(cur)
        for c in chunks:
            if len(c) >= 3:
                px.append(high_pass_rms([h.keypoints_2d for _, h in c]))
                mm.append(1000 * high_pass_rms([camera_points(h, "keypoints_3d") for _, h in c]))
                weights.append(len(c))
    w = np.array(weights, float)
    return {"jitter_2d_px": float(np.sqrt(np.sum(w * np.square(px)) / w.sum())) if weights else float("nan"),
            "jitter_3d_mm": float(np.sqrt(np.sum(w * np.square(mm)) / w.sum())) if weights else float("nan")}


def flips_per_minute(run, seconds: float) -> float:
    flips = 0
    for items in track_series(run).values():
        flips += sum(a[1].is_right != b[1].is_right for a, b in zip(items, items[1:]))
    return flips / (seconds / 60)


def pairs(a: list[Hand], b: list[Hand]) -> list[tuple[Hand, Hand]]:
    """Greedy box-IoU matching of two frames' hands."""
    if not a or not b:
        return []
    iou = box_iou([h.box for h in a], [h.box for h in b])
    out, used = [], set()
    for i, j in sorted(np.ndindex(iou.shape), key=lambda ij: -iou[ij]):
        if iou[i, j] > 0 and i not in {x for x, _ in out} and j not in used:
            out.append((i, j))
            used.add(j)
    return [(a[i], b[j]) for i, j in out]


def drift(run, reference) -> dict[str, float]:
    """Tracked vs reference (detection-every-frame) hands of the same frames: box IoU, 2D keypoints (px),
    vertices in the camera (mm); means over matched hands."""
    ious, px, mm = [], [], []
    for a, b in zip(run, reference):
        for x, y in pairs(a, b):
            ious.append(float(box_iou(x.box, y.box)[0, 0]))
            px.append(float(np.linalg.norm(x.keypoints_2d - y.keypoints_2d, axis=1).mean()))
            if x.vertices is not None and y.vertices is not None:
                d = camera_points(x, "vertices") - camera_points(y, "vertices")
                mm.append(1000 * float(np.linalg.norm(d, axis=1).mean()))
    return {"drift_box_iou": float(np.mean(ious)) if ious else float("nan"),
            "drift_2d_px": float(np.mean(px)) if px else float("nan"),
            "drift_vertex_mm": float(np.mean(mm)) if mm else float("nan")}


def against_truth(run, times) -> dict[str, float]:
    """Errors against the scene: 2D px, 3D joints mm (camera), wrong-side share, ghost frames (a hand output
    where none is), frames from the hidden hand's return until it is output again."""
    px, mm, wrong, ghosts, n = [], [], 0, 0, 0
    back = None
    for hands, t in zip(run, times):
        truth = scene(t)
        tb = [TrueHand.box.fget(x) for x in truth]
        for h in hands:
            n += 1
            iou = box_iou(h.box, tb)[0] if truth else np.zeros(0)
            if not len(iou) or iou.max() < 0.1:
                ghosts += 1
                continue
            x = truth[int(np.argmax(iou))]
            px.append(float(np.linalg.norm(h.keypoints_2d - x.keypoints_2d, axis=1).mean()))
            d = camera_points(h, "keypoints_3d") - (x.joints + x.cam_t)
            mm.append(1000 * float(np.linalg.norm(d, axis=1).mean()))
            wrong += h.is_right != x.is_right
        hidden = [x for x in truth if x.name == "B"]
        if back is None and t >= HIDDEN[1] and hidden and hands:
            if box_iou([h.box for h in hands], TrueHand.box.fget(hidden[0])).max() > 0.3:
                back = round((t - HIDDEN[1]) * FPS)
    return {"error_2d_px": float(np.mean(px)), "error_3d_mm": float(np.mean(mm)),
            "wrong_side_pct": 100 * wrong / max(n, 1), "ghost_frames": ghosts, "frames_to_reacquire": back}


def latency_stats(latency: list[float], detected: list[bool]) -> dict[str, float]:
    ms = np.array(latency) * 1000
    d = np.array(detected)
    row = {"fps": len(ms) / (ms.sum() / 1000), "p50_ms": float(np.percentile(ms, 50)),
           "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "detector_frames_pct": 100 * d.mean()}
    if d.any():
        row["detect_frame_p50_ms"] = float(np.median(ms[d]))
    if (~d).any():
        row["tracked_frame_p50_ms"] = float(np.median(ms[~d]))
    return row


def table(rows: dict[str, dict], columns: list[str]) -> str:
    head = "| configuration | " + " | ".join(columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for name, row in rows.items():
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append("" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- frames
def scene_frames(n: int, background: np.ndarray):
    return [(k, k / FPS, make_frame(k, background)) for k in range(n)]


def clip_frames(path: str, max_frames: int | None):
    from mlx_hands.pipeline.video import iter_frames

    return list(iter_frames(path, max_frames=max_frames))


def photo_frames(path: str, n: int):
    """A real photo moved along a smooth path (shift and zoom) on a 1280x720 canvas: a clip with known motion."""
    import cv2

    from mlx_hands.pipeline.images import read_image

    photo = read_image(path)
    s0 = min(W / photo.shape[1], H / photo.shape[0]) * 0.8
    out = []
    for k in range(n):
        t = k / FPS
        s = s0 * (1 + 0.1 * math.sin(2 * math.pi * t / 7))
        dx, dy = 80 * math.sin(2 * math.pi * t / 5), 40 * math.sin(2 * math.pi * t / 3.7)
        M = np.array([[s, 0, W / 2 + dx - s * photo.shape[1] / 2], [0, s, H / 2 + dy - s * photo.shape[0] / 2]])
        out.append((k, t, cv2.warpAffine(photo, M, (W, H), flags=cv2.INTER_LINEAR, borderValue=(114, 114, 114))))
    return out


def load_real(model: str, dtype: str | None):
    from mlx_hands.pipeline.runner import HandPosePipeline

    return HandPosePipeline.from_pretrained(model, dtype=dtype)


def random_pipe(size: str, precision: str):
    from mlx_hands.synthetic import random_detector, random_model
    from mlx_hands.config import DetectorConfig, RefineNetConfig, ViTConfig, WiLoRConfig
    from mlx_hands.pipeline.runner import HandPosePipeline

    if size == "tiny":
        wc = WiLoRConfig(vit=ViTConfig(dim=64, depth=2, num_heads=4), refine_net=RefineNetConfig(feat_dim=64))
        dc = DetectorConfig(width=0.25, depth=0.33, imgsz=160)
        return HandPosePipeline(random_model(wc, precision), random_detector(precision, dc), conf=0.99)
    return HandPosePipeline(random_model(None, precision), random_detector(precision), conf=0.99)


def environment() -> dict:
    import mlx.core as mx

    return {"machine": platform.machine(), "processor": platform.processor() or platform.platform(),
            "mlx": mx.__version__, "device": str(mx.default_device()), "python": platform.python_version()}


# ------------------------------------------------------------------------------------------- commands
def quality(args) -> dict:
    if args.model:
        frames = clip_frames(args.clip, args.frames) if args.clip else photo_frames(args.photo, args.frames or 300)
        pipe, truth = load_real(args.model, args.dtype), False
    else:
        n = args.frames or int(args.seconds * FPS)
        frames = scene_frames(n, np.full((H, W, 3), 90, np.uint8))
        pipe, truth = StandInPipe(StandIns(args.flip_rate, seed=args.seed)), True
    seconds = len(frames) / FPS
    smoothing = {"min_cutoff": args.min_cutoff, "beta": args.beta}
    runs = {name: run_config(pipe, frames, {**opts, **smoothing})[0] for name, opts in CONFIGS.items()}
    rows = {}
    for name, run in runs.items():
        row = {**drift(run, runs[REFERENCE]), **jitter(run), "flips_per_min": flips_per_minute(run, seconds)}
        if truth:
            row.update(against_truth(run, [t for _, t, _ in frames]))
        rows[name] = row
    cols = ["drift_box_iou", "drift_2d_px", "drift_vertex_mm", "jitter_2d_px", "jitter_3d_mm", "flips_per_min"]
    if truth:
        cols += ["error_2d_px", "error_3d_mm", "wrong_side_pct", "ghost_frames", "frames_to_reacquire"]
        true_run = [[hand_record(x.box, x.is_right, 1.0, {"keypoints_2d": x.keypoints_2d, "keypoints_3d": x.joints,
                                                          "vertices": x.surface, "cam_t": x.cam_t})
                     for x in scene(t)] for _, t, _ in frames]
        for i, hands in enumerate(true_run):
            for h in hands:
                h.track_id = 0 if h.is_right else 1
        rows["(the scene itself: motion's share of the high-pass)"] = jitter(true_run)
    what = f"stand-in networks (see the module docstring), flip rate {args.flip_rate}" if truth else f"model {args.model}"
    print(f"quality: {len(frames)} frames ({seconds:.0f} s at {FPS:g} fps), {what}")
    print(f"drift: against '{REFERENCE}'; smoothing: min_cutoff {args.min_cutoff} Hz, beta {args.beta}\n")
    print(table(rows, cols))
    return {"part": "quality", "frames": len(frames), "stand_ins": truth,
            "flip_rate": args.flip_rate if truth else None, "rows": rows}


def speed(args) -> dict:
    n = args.warmup + args.frames
    if args.model:
        pipe = load_real(args.model, args.dtype)
        frames = clip_frames(args.clip, n) if args.clip else photo_frames(args.photo, n)
        label = f"model {args.model}"
    else:
        pipe = SteeredPipe(random_pipe(args.size, args.precision), StandIns(args.flip_rate, seed=args.seed))
        background = np.random.default_rng(0).integers(0, 256, (H, W, 3)).astype(np.uint8)
        frames = scene_frames(n, background)
        label = f"random weights, {args.size} size, {args.precision}; steered by the stand-ins"
    warm, timed = frames[: args.warmup], frames[args.warmup:]
    configs = {"detect every frame": dict(track=False),
               f"tracking (detect every {args.detect_every})": dict(detect_every=args.detect_every),
               "tracking, max 2 hands": dict(detect_every=args.detect_every, max_hands=2)}
    rows = {}
    for name, opts in configs.items():
        if warm:
            run_config(pipe, warm, dict(opts, track=False))  # compile, caches, allocator: both paths
            run_config(pipe, warm, opts)
        stages = []
        _, latency, detected = run_config(pipe, timed, opts, stages)
        rows[name] = latency_stats(latency, detected)
        tracked = [st for st, d in zip(stages, detected) if not d] or stages
        rows[name]["stages_p50_ms"] = {k: round(1e3 * float(np.median([st.get(k, 0.0) for st in tracked])), 3)
                                       for k in tracked[0]}
        print(f"  {name}: {rows[name]['p50_ms']:.1f} ms p50", file=sys.stderr, flush=True)
    print(f"speed: {len(timed)} timed frames of {W}x{H}, 2 hands, {label}\n")
    print(table(rows, ["fps", "p50_ms", "p99_ms", "max_ms", "detector_frames_pct", "detect_frame_p50_ms",
                       "tracked_frame_p50_ms"]))
    print("\nstages of the tracked frames (of every frame when the detector always runs), p50 ms:")
    for name, row in rows.items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row["stages_p50_ms"].items()))
    return {"part": "speed", "label": label, "timed_frames": len(timed), "warmup": len(warm), "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=["quality", "speed"])
    p.add_argument("--model", help="a real model folder / Hub repo: no stand-ins (needs --clip or --photo)")
    p.add_argument("--clip", help="with --model: a video with hands")
    p.add_argument("--photo", help="with --model: a photo with hands, moved along a smooth path into a clip")
    p.add_argument("--dtype", default=None, help="with --model: compute dtype")
    p.add_argument("--size", choices=["tiny", "full"], default="tiny", help="speed: random-weight model size")
    p.add_argument("--precision", default="float32", help="speed: random-weight model precision")
    p.add_argument("--frames", type=int, default=None,
                   help="quality: frames (default: --seconds, or the whole clip); speed: timed frames (default 30)")
    p.add_argument("--seconds", type=float, default=20.0, help="quality: scene length (default 20 s)")
    p.add_argument("--warmup", type=int, default=5, help="speed: untimed frames first (default 5)")
    p.add_argument("--detect-every", type=int, default=10, help="speed: tracking's detector period (default 10)")
    p.add_argument("--flip-rate", type=float, default=0.1, help="stand-in detector: wrong side per detection (0.1)")
    p.add_argument("--min-cutoff", type=float, default=1.0, help="quality: One Euro min cutoff, Hz (default 1.0)")
    p.add_argument("--beta", type=float, default=0.02, help="quality: One Euro speed coefficient, 1/px (default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.model and not (args.clip or args.photo):
        p.error("--model needs --clip VIDEO or --photo IMAGE (real weights need real hands)")
    if args.part == "speed" and args.frames is None:
        args.frames = 30
    result = quality(args) if args.part == "quality" else speed(args)
    result.update(command=" ".join(sys.argv), date=time.strftime("%Y-%m-%d"), environment=environment())
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
