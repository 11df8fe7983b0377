"""Track ids across video frames and One Euro smoothing per track. numpy only.

Tracking: a detection continues a track of the same side (left/right) whose box it overlaps (IoU) or whose
centre is near (in units of the track's box size), preferring the best overlap; a box moves with the track's
recent velocity while predicted. Tracks that find no detection stay alive for `max_lost` frames, so a hand that
is missed for a few frames (occlusion, motion blur) comes back with its id; after that the id is retired and
never reused.

Smoothing: the One Euro filter (Casiez, Roussel & Vogel, "1€ Filter: A Simple Speed-based Low-pass Filter for
Noisy Input in Interactive Systems", CHI 2012, https://gery.casiez.net/1euro/). A first-order low-pass whose
cutoff rises with speed: `cutoff = min_cutoff + beta · |speed|`, so a still hand is smoothed hard (no jitter)
and a moving one lightly (little lag). Parameters:
- `min_cutoff` (Hz): cutoff at rest. Lower = less jitter, more lag at low speed.
- `beta` (1/pixel): how fast the cutoff grows with speed (pixels/second). Higher = less lag when moving.
- `d_cutoff` (Hz): cutoff of the low-pass on the speed estimate itself.
Filtering uses the real time stamps, so dropped frames or a variable frame rate are handled.

The tracker smooths, per track, `box` and `keypoints_2d` (pixels) and `keypoints_3d`, `vertices`, `cam_t`
(metres). For the metric fields the speed is converted to pixels with focal / depth (depth motion: by the
change of apparent size it causes), so one `beta` fits all.
MANO parameters (`global_orient`, `hand_pose`, `betas`) and `crop_cam` are left as estimated. The unsmoothed
values are kept in `hand.extra["raw"]` (a dict of arrays; left out of JSON files unless asked for).
When a track comes back after being lost, its filters restart from the new values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from ..types import Hand

SMOOTHED_PIXELS = ("box", "keypoints_2d")
SMOOTHED_METRES = ("keypoints_3d", "vertices", "cam_t")
HAND_SIZE = 0.2  # metres, wrist to fingertip: converts depth speed into on-screen size change


class OneEuroFilter:
    """One Euro filter over numpy arrays of any fixed shape, elementwise. `__call__(x, t)` -> filtered x.

    t is in seconds and must increase. `speed_scale` (scalar or broadcastable to x) multiplies |speed| before
    `beta`: a unit conversion, so that beta is always in 1/pixel.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if not min_cutoff > 0 or not d_cutoff > 0:
            raise ValueError(f"min_cutoff and d_cutoff must be positive (Hz), got {min_cutoff} and {d_cutoff}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    @staticmethod
    def _alpha(cutoff, dt: float):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x, t: float, *, speed_scale=1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        if not dt > 0:
            raise ValueError(f"time stamps must increase: got t={t} after t={self._t}")
        dx = (x - self._x) / dt
        self._dx += self._alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * speed_scale * np.abs(self._dx)
        self._x = self._x + self._alpha(cutoff, dt) * (x - self._x)
        self._t = float(t)
        return self._x.copy()


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (N, 4) and b (M, 4), xyxy -> (N, M)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclasses.dataclass(eq=False)
class _Track:
    id: int
    is_right: bool
    box: np.ndarray  # last matched raw box
    t: float  # time of the last match
    velocity: np.ndarray  # box velocity, pixels / second (EMA)
    lost: int = 0  # frames since the last match
    matches: int = 1  # frames matched so far
    filters: dict = dataclasses.field(default_factory=dict)

    def predicted_box(self, t: float) -> np.ndarray:
        dt = min(max(t - self.t, 0.0), 0.5)  # extrapolate at most half a second
        return self.box + self.velocity * dt

    @property
    def size(self) -> float:
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return max(math.sqrt(max(w * h, 0.0)), 1.0)


class HandTracker:
    """Assigns stable `track_id`s to the hands of consecutive frames and (optionally) smooths them.

    `update(hands, t)` takes one frame's hands and its time in seconds and returns new Hand records (the
    inputs are not modified) with `track_id` set and, when `smooth`, filtered values; see the module docstring.
    """

    def __init__(
        self,
        *,
        smooth: bool = True,
        min_cutoff: float = 1.0,
        beta: float = 0.02,
        d_cutoff: float = 1.0,
        max_lost: int = 15,
        iou_threshold: float = 0.1,
        max_distance: float = 1.0,
        keep_raw: bool = True,
    ):
        """max_lost: frames a track survives without a detection. iou_threshold / max_distance: a detection may
        continue a track if their boxes overlap at least this much, or if its centre is within max_distance ×
        the track's box size (sqrt of area) of the predicted centre (the gate grows while the track is lost)."""
        if max_lost < 0:
            raise ValueError(f"max_lost must be >= 0 frames, got {max_lost}")
        OneEuroFilter(min_cutoff, beta, d_cutoff)  # validates the parameters
        self.smooth, self.keep_raw = smooth, keep_raw
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.max_lost, self.iou_threshold, self.max_distance = max_lost, iou_threshold, max_distance
        self.reset()

    def reset(self) -> None:
        self.tracks: list[_Track] = []
        self._next_id = 0
        self._t: float | None = None

    def _cost(self, track: _Track, hand: Hand, t: float) -> float | None:
        if track.is_right != bool(hand.is_right):
            return None
        pred = track.predicted_box(t)
        box = np.asarray(hand.box, np.float64)
        iou = float(box_iou(pred, box)[0, 0])
        dist = float(np.linalg.norm((box[:2] + box[2:]) / 2 - (pred[:2] + pred[2:]) / 2)) / track.size
        if iou < self.iou_threshold and dist > self.max_distance * (1 + 0.5 * track.lost):
            return None
        return (1.0 - iou) + 0.5 * dist + 0.05 * track.lost  # prefer overlap, then proximity, then recent tracks

    def _match(self, hands: Sequence[Hand], t: float) -> dict[int, _Track]:
        """Greedy lowest-cost matching (a handful of hands per frame: as good as Hungarian in practice)."""
        pairs = []
        for ti, track in enumerate(self.tracks):
            for hi, hand in enumerate(hands):
                c = self._cost(track, hand, t)
                if c is not None:
                    pairs.append((c, ti, hi))
        matched: dict[int, _Track] = {}
        used = set()
        for _, ti, hi in sorted(pairs):
            if hi not in matched and ti not in used:
                matched[hi] = self.tracks[ti]
                used.add(ti)
        return matched

    def update(self, hands: Sequence[Hand], t: float) -> list[Hand]:
        t = float(t)
        if self._t is not None and not t > self._t:
            raise ValueError(f"time stamps must increase: got t={t} after t={self._t}")
        self._t = t
        matched = self._match(hands, t)
        out = []
        for hi, hand in enumerate(hands):
            box = np.asarray(hand.box, np.float64)
            track = matched.get(hi)
            if track is None:
                track = _Track(self._next_id, bool(hand.is_right), box, t, np.zeros(4))
                self._next_id += 1
                self.tracks.append(track)
            else:
                if track.lost > 0:
                    for f in track.filters.values():
                        f.reset()  # no continuity across a gap
                v = (box - track.box) / (t - track.t)
                track.velocity = v if track.matches == 1 else 0.5 * (track.velocity + v)
                track.box, track.t, track.lost = box, t, 0
                track.matches += 1
            out.append(self._smoothed(track, hand, t) if self.smooth else dataclasses.replace(hand, track_id=track.id))
        for track in self.tracks:
            if track.t < t:  # not matched in this frame
                track.lost += 1
        self.tracks = [tr for tr in self.tracks if tr.lost <= self.max_lost]
        return out

    def _smoothed(self, track: _Track, hand: Hand, t: float) -> Hand:
        changes, raw = {}, {}
        depth = float(np.asarray(hand.cam_t, np.float64)[2]) if hand.cam_t is not None else 0.0
        metres_to_px = float(hand.focal_length) / depth if depth > 1e-6 else 1.0
        # Depth motion shows only as a change of apparent size (a hand spans ~HAND_SIZE metres): slower on screen.
        cam_t_scale = metres_to_px * np.array([1.0, 1.0, HAND_SIZE / depth if depth > 1e-6 else 1.0])
        for name in SMOOTHED_PIXELS + SMOOTHED_METRES:
            value = getattr(hand, name)
            if value is None:
                continue
            f = track.filters.get(name)
            if f is None:
                f = track.filters[name] = OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff)
            scale = 1.0 if name in SMOOTHED_PIXELS else cam_t_scale if name == "cam_t" else metres_to_px
            arr = np.asarray(value)
            changes[name] = f(arr, t, speed_scale=scale).astype(arr.dtype if arr.dtype.kind == "f" else np.float64)
            raw[name] = arr
        extra = dict(hand.extra or {})
        if self.keep_raw:
            extra["raw"] = raw
        return dataclasses.replace(hand, track_id=track.id, extra=extra, **changes)
