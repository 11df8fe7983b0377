"""Hand tracks across video frames: ids, a handedness lock, boxes from keypoints, One Euro smoothing. numpy only.

Association: a detection continues the track whose (motion-predicted) box it overlaps best (IoU) or whose
centre is near (in units of the track's box size). The side is part of the cost, not a gate: a detection of
the other side continues a track when nothing of its own side fits, so a left/right flicker of the detector
does not start a new track. Tracks that find no detection stay alive for `max_lost` frames, so a hand that is
missed for a few frames (occlusion, motion blur) comes back with its id; after that the id is retired and
never reused.

Handedness lock (hysteresis): each track has a locked side. A detection of the other side only counts a
disagreement; the side changes after `handedness_lock` consecutive disagreeing detections (1 = follow the
detector). The id is kept through a change; the smoothing filters restart (a left mesh is the mirror image of
a right one, nothing to interpolate). Left crops are mirrored before WiLoR, so the side decides the crop:
`pipeline.stream.HandStream` runs WiLoR with the locked side. `HandTracker.update` receives hands that were
already estimated and cannot re-crop them: there the lock only keeps ids.

Boxes from keypoints (for tracking between detections): the bounding box of the 21 2D keypoints, scaled about
its centre so that its longest side is `box_scale` x the keypoints' extent and shifted by `box_offset` (in
units of that extent): the padding a detector box has around a hand's joints. Each track measures its own
`box_scale` and offset at every detection (detector box vs the keypoints WiLoR found in it), so the propagated
box reproduces that detector's boxes for that hand; `DEFAULT_BOX_SCALE` is the prior until then (see its
comment).

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
import logging
import math
from collections.abc import Sequence

import numpy as np

from ..types import Hand

log = logging.getLogger(__name__)

SMOOTHED_PIXELS = ("box", "keypoints_2d")
SMOOTHED_METRES = ("keypoints_3d", "vertices", "cam_t")
HAND_SIZE = 0.2  # metres, wrist to fingertip: converts depth speed into on-screen size change
# Detector box side / 2D keypoint extent (longest sides). The keypoints are joint centres and fingertip surface
# points, so a box around the hand's skin is larger: on a MANO-sized procedural hand (tests/synth.py) in 400
# random orientations and finger curls, silhouette box / keypoint box is 1.10 / 1.28 / 1.49 (5th / 50th / 95th
# percentile). Only a prior: each track replaces it by its detector's own ratio at every detection.
DEFAULT_BOX_SCALE = 1.25
BOX_SCALE_RANGE = (0.9, 2.0)  # measured ratios outside are implausible (a failed estimate): not learned
SIDE_PENALTY = 0.5  # association cost of continuing a track with a detection of the other side


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


def keypoint_extent(keypoints_2d: np.ndarray) -> float:
    """Longest side (pixels) of the bounding box of (K, 2) points."""
    kp = np.asarray(keypoints_2d, np.float64).reshape(-1, 2)
    return float(np.max(kp.max(0) - kp.min(0)))


def box_from_keypoints(keypoints_2d: np.ndarray, scale: float = DEFAULT_BOX_SCALE, offset=(0.0, 0.0)) -> np.ndarray:
    """A detector-like box (4,) xyxy around 2D keypoints (K, 2): their bounding box scaled by `scale` about its
    centre, moved by `offset` x its longest side. Each side is at least a quarter of the longest one (a hand
    seen edge-on still has a width)."""
    kp = np.asarray(keypoints_2d, np.float64).reshape(-1, 2)
    lo, hi = kp.min(0), kp.max(0)
    extent = float(np.max(hi - lo))
    half = np.maximum(hi - lo, extent / 4) * scale / 2
    centre = (lo + hi) / 2 + np.asarray(offset, np.float64) * extent
    return np.concatenate([centre - half, centre + half])


def visible_fraction(box: np.ndarray, image_wh: tuple[int, int]) -> float:
    """Share of a box's area inside the image (0 when it has no area)."""
    W, H = image_wh
    x1, y1, x2, y2 = np.asarray(box, np.float64)
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    if area <= 0:
        return 0.0
    inside = max(min(x2, W) - max(x1, 0.0), 0.0) * max(min(y2, H) - max(y1, 0.0), 0.0)
    return inside / area


@dataclasses.dataclass(eq=False)
class Track:
    """One hand followed across frames. Pixels, seconds."""

    id: int
    is_right: bool  # the locked side: the one WiLoR runs with
    box: np.ndarray  # last box (a detector's, or from the last keypoints)
    t: float  # time of the last observation
    velocity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4))  # box velocity, pixels / second
    confidence: float = 1.0  # detector score at the last detection
    keypoints_2d: np.ndarray | None = None  # last unsmoothed 2D keypoints (21, 2): the next box comes from them
    box_scale: float = DEFAULT_BOX_SCALE
    box_offset: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))
    extent: float = 0.0  # keypoint extent at the last detection: the reference for "the keypoints collapsed"
    disagree: int = 0  # consecutive detections of the other side
    lost: int = 0  # frames since the last observation
    matches: int = 0  # observations so far
    filters: dict = dataclasses.field(default_factory=dict)

    def predicted_box(self, t: float) -> np.ndarray:
        dt = min(max(t - self.t, 0.0), 0.5)  # extrapolate at most half a second
        return self.box + self.velocity * dt

    def keypoint_box(self) -> np.ndarray | None:
        """This frame's box from the last keypoints, padded like this track's detector boxes."""
        if self.keypoints_2d is None:
            return None
        return box_from_keypoints(self.keypoints_2d, self.box_scale, self.box_offset)

    @property
    def size(self) -> float:
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return max(math.sqrt(max(w * h, 0.0)), 1.0)

    def calibrate(self, detector_box: np.ndarray, keypoints_2d: np.ndarray) -> None:
        """Learn this detector's padding around this hand's keypoints (called at detections)."""
        extent = keypoint_extent(keypoints_2d)
        if not (extent > 1.0 and np.isfinite(extent)):
            return
        b = np.asarray(detector_box, np.float64)
        kp = np.asarray(keypoints_2d, np.float64)
        scale = float(np.max(b[2:] - b[:2])) / extent
        if not BOX_SCALE_RANGE[0] <= scale <= BOX_SCALE_RANGE[1]:
            return
        offset = np.clip(((b[:2] + b[2:]) / 2 - (kp.min(0) + kp.max(0)) / 2) / extent, -0.3, 0.3)
        first = self.extent == 0.0
        self.box_scale = scale if first else 0.5 * (self.box_scale + scale)
        self.box_offset = offset if first else 0.5 * (self.box_offset + offset)
        self.extent = extent


class HandTracker:
    """Assigns stable `track_id`s to the hands of consecutive frames, locks their side and (optionally) smooths them.

    Two ways to use it:
    - `update(hands, t)`: one frame's hands (already estimated) and its time in seconds -> new Hand records
      (inputs are not modified) with `track_id` set and, when `smooth`, filtered values.
    - in two steps, when the side must be known before WiLoR runs (pipeline.stream.HandStream):
      `match(boxes, is_right, t)` gives each detection its track (with the locked side), then
      `commit(tracks, hands, t)` records what WiLoR found and returns the tracked hands.
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
        handedness_lock: int = 3,
        keep_raw: bool = True,
    ):
        """max_lost: frames a track survives without a detection. iou_threshold / max_distance: a detection may
        continue a track if their boxes overlap at least this much, or if its centre is within max_distance ×
        the track's box size (sqrt of area) of the predicted centre (the gate grows while the track is lost).
        handedness_lock: consecutive disagreeing detections that change a track's side (1: every detection)."""
        if max_lost < 0:
            raise ValueError(f"max_lost must be >= 0 frames, got {max_lost}")
        if not (isinstance(handedness_lock, (int, np.integer)) and handedness_lock >= 1):
            raise ValueError(f"handedness_lock must be a whole number of detections >= 1, got {handedness_lock!r}")
        OneEuroFilter(min_cutoff, beta, d_cutoff)  # validates the parameters
        self.smooth, self.keep_raw = smooth, keep_raw
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.max_lost, self.iou_threshold, self.max_distance = max_lost, iou_threshold, max_distance
        self.handedness_lock = int(handedness_lock)
        self.reset()

    def reset(self) -> None:
        self.tracks: list[Track] = []
        self._next_id = 0
        self._t: float | None = None
        self.flips = 0  # side changes of tracks so far

    @property
    def active(self) -> list[Track]:
        """Tracks observed in the last frame (those that can be followed from their keypoints)."""
        return [tr for tr in self.tracks if tr.lost == 0]

    def _check_time(self, t: float) -> float:
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"time stamps must be finite seconds, got {t}")
        if self._t is not None and not t > self._t:
            raise ValueError(f"time stamps must increase: got t={t} after t={self._t}")
        return t

    def _cost(self, track: Track, box: np.ndarray, is_right: bool, t: float) -> float | None:
        pred = track.predicted_box(t)
        iou = float(box_iou(pred, box)[0, 0])
        dist = float(np.linalg.norm((box[:2] + box[2:]) / 2 - (pred[:2] + pred[2:]) / 2)) / track.size
        if iou < self.iou_threshold and dist > self.max_distance * (1 + 0.5 * track.lost):
            return None
        side = 0.0 if track.is_right == is_right else SIDE_PENALTY
        return (1.0 - iou) + 0.5 * dist + 0.05 * track.lost + side  # overlap, proximity, recency, same side

    def match(self, boxes, is_right, t: float, confidence=None) -> list[Track]:
        """One frame's detections (boxes (N, 4) xyxy, is_right (N,)) -> the track of each, new ones created.

        Greedy lowest-cost matching (a handful of hands per frame: as good as Hungarian in practice). The side
        of a continued track follows the handedness lock; `track.is_right` is the side to run WiLoR with.
        """
        t = self._check_time(t)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        sides = [bool(s) for s in np.asarray(is_right).reshape(-1)]
        conf = np.ones(len(boxes)) if confidence is None else np.asarray(confidence, np.float64).reshape(-1)
        pairs = []
        for ti, track in enumerate(self.tracks):
            for hi in range(len(boxes)):
                c = self._cost(track, boxes[hi], sides[hi], t)
                if c is not None:
                    pairs.append((c, ti, hi))
        matched: dict[int, Track] = {}
        used = set()
        for _, ti, hi in sorted(pairs):
            if hi not in matched and ti not in used:
                matched[hi] = self.tracks[ti]
                used.add(ti)
        out = []
        for hi, box in enumerate(boxes):
            track = matched.get(hi)
            if track is None:
                track = Track(self._next_id, sides[hi], box.copy(), t)
                self._next_id += 1
                self.tracks.append(track)
            else:
                self._vote(track, sides[hi])
            track.confidence = float(conf[hi])
            out.append(track)
        return out

    def _vote(self, track: Track, is_right: bool) -> None:
        if is_right == track.is_right:
            track.disagree = 0
            return
        track.disagree += 1
        if track.disagree >= self.handedness_lock:
            log.debug("track %d: side %s -> %s after %d detections", track.id, track.is_right, is_right, track.disagree)
            track.is_right, track.disagree = is_right, 0
            track.filters.clear()  # a mirrored mesh: nothing to smooth across
            self.flips += 1

    def commit(self, tracks: Sequence[Track], hands: Sequence[Hand], t: float, *, detected: bool = True,
               extra: Sequence[dict] | None = None) -> list[Hand]:
        """Record one frame: `hands[i]` is what WiLoR found for `tracks[i]` (tracks not listed are not seen in
        this frame). detected: the boxes came from the detector (the track learns its box padding from them).
        extra: per hand, entries for `hand.extra`. -> the hands with track ids (smoothed when `smooth`)."""
        t = self._check_time(t)
        if len(tracks) != len(hands):
            raise ValueError(f"commit needs one hand per track: {len(tracks)} tracks, {len(hands)} hands")
        out = []
        for i, (track, hand) in enumerate(zip(tracks, hands)):
            box = np.asarray(hand.box, np.float64)
            if track.lost > 0:
                track.filters.clear()  # no continuity across a gap
            if track.matches > 0 and t > track.t:
                v = (box - track.box) / (t - track.t)
                track.velocity = v if track.matches == 1 else 0.5 * (track.velocity + v)
            track.box, track.t, track.lost = box, t, 0
            track.matches += 1
            kp = np.asarray(hand.keypoints_2d, np.float64)
            if np.all(np.isfinite(kp)):
                if detected:
                    track.calibrate(box, kp)
                track.keypoints_2d = kp
            hand = dataclasses.replace(hand, extra={**(hand.extra or {}), **(extra[i] if extra else {})})
            out.append(self._smoothed(track, hand, t) if self.smooth else dataclasses.replace(hand, track_id=track.id))
        for track in self.tracks:
            if track.t < t:  # not seen in this frame
                track.lost += 1
        self.tracks = [tr for tr in self.tracks if tr.lost <= self.max_lost]
        self._t = t
        return out

    def update(self, hands: Sequence[Hand], t: float) -> list[Hand]:
        """Track one frame of already-estimated hands (ids and smoothing; the lock can only keep ids here)."""
        boxes = [np.asarray(h.box, np.float64) for h in hands]
        tracks = self.match(np.reshape(boxes, (-1, 4)), [h.is_right for h in hands], t, [h.confidence for h in hands])
        return self.commit(tracks, hands, t)

    def _smoothed(self, track: Track, hand: Hand, t: float) -> Hand:
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
