"""HandStream: hands in consecutive frames (a video, a webcam, one client of a stream server). numpy only.

    stream = HandStream(pipe)                     # one per video / camera / connection
    for index, t, rgb in iter_frames("clip.mp4"):
        hands = stream(rgb, t)                    # Hands with track_id, locked side, smoothed

Each frame is three steps, public so that a server can batch step (b) over its clients:
  (a) `plan(frame, t)` chooses the boxes: the detector runs (every `detect_every` frames, when a tracked hand
      was lost or its tracking confidence fell, when fewer hands are tracked than were last detected, when no
      hand is tracked), or each tracked hand's box comes from its previous 2D keypoints, padded like the
      detector's boxes (tracking.box_from_keypoints). Detections are matched to tracks here and each box gets
      its track's locked side (tracking.HandTracker), because the side decides the crop (left crops are
      mirrored).
  (b) `predict(frame, plan)`: WiLoR on those boxes with those sides (`pipe.predict_with_boxes`).
  (c) `finish(frame, t, plan, hands)`: checks each tracked hand (below), then ids, sides, smoothing.

Tracking confidence, on frames without the detector. A tracked hand is dropped (and the detector runs on the
next frame) when
- its box from keypoints lies mostly outside the frame (`min_visible`, share of the box's area): checked
  before WiLoR; the detector then runs on this frame instead;
- WiLoR's keypoints disagree with the box they were cropped from: `tracking_score` = IoU of the crop's box
  and the box from the new keypoints < `min_tracking_score`. The crop is 2.5x the box around where the hand
  was, so a hand that is in it gives keypoints that reproduce nearly the same box (a hand moving half its
  width between two frames still gives IoU 0.33); a crop with no hand gives a pose at an unrelated place or
  scale. This is the measure WiLoR offers: it has no hand-presence output (MediaPipe's landmark model has one);
- the keypoints collapse: non-finite, an extent under `min_extent_px`, or under 0.3x / over 3x the extent at
  the track's last detection.
On detection frames the detector's own score (`conf`) is the confidence, and its boxes are the truth: a
tracked hand the detector does not find is dropped there (kept for `max_lost` frames to get its id back).

`max_hands`: at most this many hands (the detector's best); while that many are tracked, no periodic
detection (MediaPipe's rule for its VIDEO / LIVE_STREAM modes); losses still trigger the detector.

Handedness: `force_handedness` ("left" | "right") and `swap_handedness` replace the detector's class before
the lock, and WiLoR runs with the result. They are for footage where the detector's class is wrong for the
hand as it appears in the picture (e.g. a one-hand egocentric rig: force). A mirrored picture (a selfie
preview) is not such a case: there a right hand looks like a left hand, and the detector's class is right for
the picture. To see your real hands in a mirror view, estimate on the camera's own frames and mirror only the
drawing (`mlx-hands live --mirror`, `video.draw_frame(mirror=True)`).

Output hands: `confidence` is the detector score at the track's last detection; `box` is the detector's box
on detection frames and the box from this frame's keypoints otherwise; `extra["detected"]` (bool) says which,
`extra["tracking_score"]` (IoU, see above) is set on every frame.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time

import numpy as np

from .images import load_image
from .tracking import HandTracker, Track, box_from_keypoints, box_iou, keypoint_extent, visible_fraction
from ..types import Hand

log = logging.getLogger(__name__)

SIDES = {"left": False, "right": True}


@dataclasses.dataclass
class FramePlan:
    """Step (a)'s result: the boxes WiLoR runs on in this frame."""

    boxes: np.ndarray  # (N, 4) xyxy pixels
    is_right: np.ndarray  # (N,) bool: the side WiLoR runs with (the track's locked side)
    confidence: np.ndarray  # (N,) float32: detector score (this frame's, or at the track's last detection)
    tracks: list[Track]  # (N,) the track of each box
    detected: bool  # the detector ran in this frame
    reason: str  # why the detector ran ("" when it did not)
    detector_keypoints: np.ndarray | None = None  # (N, 21, 3) the detector's keypoints, detection frames only
    detector_is_right: np.ndarray | None = None  # (N,) the detector's class after force/swap, detection frames only


class HandStream:
    """Detect, track and smooth hands over consecutive frames with one pipeline (see the module docstring).

    pipe: a HandPosePipeline (or any object with `detect(rgb)` and `predict_with_boxes(rgb, boxes, is_right,
    confidence=, include_vertices=)`). An object with only `__call__(rgb) -> list[Hand]` also works
    (the detector then runs in every frame, with ids and smoothing; `track` must not be True).
    """

    def __init__(
        self,
        pipe,
        *,
        track: bool | None = None,
        detect_every: int = 10,
        max_hands: int | None = None,
        handedness_lock: int = 3,
        force_handedness: str | None = None,
        swap_handedness: bool = False,
        min_tracking_score: float = 0.3,
        min_visible: float = 0.5,
        min_extent_px: float = 4.0,
        smooth: bool = True,
        min_cutoff: float = 1.0,
        beta: float = 0.02,
        d_cutoff: float = 1.0,
        max_lost: int = 15,
        include_vertices: bool = True,
    ):
        """track: boxes from keypoints between detections (None: when `pipe` can, i.e. has detect and
        predict_with_boxes; False: the detector in every frame). detect_every: the detector runs at least every
        this many frames while tracking. The other options: see the module docstring and tracking.HandTracker."""
        can_track = callable(getattr(pipe, "detect", None)) and callable(getattr(pipe, "predict_with_boxes", None))
        if track and not can_track:
            raise ValueError("tracking needs a pipeline with detect() and predict_with_boxes() (a HandPosePipeline)")
        if not (isinstance(detect_every, (int, np.integer)) and detect_every >= 1):
            raise ValueError(f"detect_every must be a whole number of frames >= 1, got {detect_every!r}")
        if max_hands is not None and not (isinstance(max_hands, (int, np.integer)) and max_hands >= 1):
            raise ValueError(f"max_hands must be a whole number >= 1 (or None for no limit), got {max_hands!r}")
        if force_handedness is not None and force_handedness not in SIDES:
            raise ValueError(f"force_handedness must be 'left', 'right' or None, got {force_handedness!r}")
        if (force_handedness or swap_handedness) and not can_track:
            raise ValueError("force_handedness / swap_handedness need a pipeline with detect() and "
                             "predict_with_boxes(): the side decides the crop")
        for name, v in (("min_tracking_score", min_tracking_score), ("min_visible", min_visible)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        self.pipe = pipe
        self.boxed = can_track  # detector and WiLoR called separately
        self.track = can_track if track is None else bool(track)
        self.detect_every = int(detect_every) if self.track else 1
        self.max_hands = max_hands
        self.force_handedness, self.swap_handedness = force_handedness, bool(swap_handedness)
        self.min_tracking_score, self.min_visible, self.min_extent_px = min_tracking_score, min_visible, min_extent_px
        self.include_vertices = include_vertices
        self.tracker = HandTracker(smooth=smooth, min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff,
                                   max_lost=max_lost, handedness_lock=handedness_lock)
        self._settings = {
            "track": self.track, "detect_every": self.detect_every, "max_hands": max_hands,
            "handedness_lock": handedness_lock, "force_handedness": force_handedness,
            "swap_handedness": self.swap_handedness, "min_tracking_score": min_tracking_score,
            "min_visible": min_visible, "smooth": smooth, "min_cutoff": min_cutoff, "beta": beta,
            "d_cutoff": d_cutoff, "max_lost": max_lost,
        }
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new video or a reconnected client)."""
        self.tracker.reset()
        self._since_detection: int | None = None  # frames since the detector last ran
        self._last_detected = 0  # hands the detector found last time
        self._redetect = ""  # why the next frame must run the detector
        self.frames = 0
        self.detections = 0  # frames on which the detector ran
        self.last_timings: dict[str, float] = {}

    def settings(self) -> dict:
        """The options in force, for result files."""
        return dict(self._settings)

    # ---------------------------------------------------------------- (a) choose the boxes
    def _detect_reason(self) -> str:
        active = [tr for tr in self.tracker.active if tr.keypoints_2d is not None]
        if not self.track:
            return "every frame"
        if self._redetect:
            return self._redetect
        if not active:
            return "no hand tracked"
        if len(active) < self._last_detected:
            return "fewer hands tracked than detected"
        if self.max_hands is not None and len(active) >= self.max_hands:
            return ""
        if self._since_detection is None or self._since_detection + 1 >= self.detect_every:
            return f"every {self.detect_every} frames"
        return ""

    def _side(self, detector_is_right: np.ndarray) -> np.ndarray:
        if self.force_handedness is not None:
            return np.full(len(detector_is_right), SIDES[self.force_handedness])
        return ~detector_is_right if self.swap_handedness else detector_is_right

    def plan(self, frame: np.ndarray, t: float) -> FramePlan:
        """Step (a): the boxes and sides to run WiLoR on in this frame (runs the detector when needed)."""
        img = load_image(frame, "frame")
        H, W = img.shape[:2]
        reason = self._detect_reason()
        if not reason:
            tracks, boxes = [], []
            for tr in self.tracker.active:
                box = tr.keypoint_box()
                if box is None:
                    continue
                if visible_fraction(box, (W, H)) < self.min_visible:
                    reason = f"track {tr.id} left the frame"
                    break
                tracks.append(tr)
                boxes.append(box)
            if not reason:
                return FramePlan(
                    boxes=np.reshape(boxes, (-1, 4)),
                    is_right=np.array([tr.is_right for tr in tracks], bool),
                    confidence=np.array([tr.confidence for tr in tracks], np.float32),
                    tracks=tracks, detected=False, reason="",
                )
        if not self.boxed:
            return FramePlan(np.zeros((0, 4)), np.zeros(0, bool), np.zeros(0, np.float32), [], True, reason)
        t0 = time.perf_counter()
        det = self.pipe.detect(img)
        self.last_timings = {"detect": time.perf_counter() - t0}
        boxes = np.asarray(det.boxes, np.float64).reshape(-1, 4)
        det_right = np.asarray(det.classes).reshape(-1) == 1  # detector classes: 0 = left, 1 = right
        scores = np.asarray(det.scores, np.float32).reshape(-1)
        kps = getattr(det, "keypoints", None)
        kps = np.asarray(kps) if kps is not None and len(kps) == len(boxes) else None
        # a box clipped to a sliver at the image edge has no crop; then the best first, at most max_hands
        keep = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        keep = keep[np.argsort(-scores[keep], kind="stable")][: self.max_hands]
        boxes, det_right, scores = boxes[keep], det_right[keep], scores[keep]
        kps = None if kps is None else kps[keep]
        sides = self._side(det_right)
        tracks = self.tracker.match(boxes, sides, t, scores)
        return FramePlan(
            boxes=boxes, is_right=np.array([tr.is_right for tr in tracks], bool), confidence=scores,
            tracks=tracks, detected=True, reason=reason, detector_keypoints=kps, detector_is_right=sides,
        )

    # ---------------------------------------------------------------- (b) WiLoR
    def predict(self, frame: np.ndarray, plan: FramePlan) -> list[Hand]:
        """Step (b): WiLoR on the plan's boxes (one batch). A server may run this for many streams at once."""
        if not self.boxed:
            return list(self.pipe(frame))
        if len(plan.boxes) == 0:
            return []
        return self.pipe.predict_with_boxes(frame, plan.boxes, plan.is_right, confidence=plan.confidence,
                                            include_vertices=self.include_vertices)

    # ---------------------------------------------------------------- (c) check, track, smooth
    def _check(self, track: Track, box: np.ndarray, hand: Hand, image_wh) -> tuple[float, str, np.ndarray | None]:
        """(tracking score, why the hand is dropped or "", the box from its keypoints) for one hand of a tracking
        frame."""
        kp = np.asarray(hand.keypoints_2d, np.float64)
        if not np.all(np.isfinite(kp)):
            return 0.0, "non-finite keypoints", None
        extent = keypoint_extent(kp)
        new_box = box_from_keypoints(kp, track.box_scale, track.box_offset)
        score = float(box_iou(box, new_box)[0, 0])
        if extent < self.min_extent_px or (track.extent > 0 and not 0.3 * track.extent <= extent <= 3 * track.extent):
            return score, "keypoints collapsed", new_box
        if score < self.min_tracking_score:
            return score, "keypoints left the crop's box", new_box
        if visible_fraction(new_box, image_wh) < self.min_visible:
            return score, "left the frame", new_box
        return score, "", new_box

    def finish(self, frame: np.ndarray, t: float, plan: FramePlan, hands: list[Hand]) -> list[Hand]:
        """Step (c): the frame's hands with track ids, locked sides and smoothing."""
        t0 = time.perf_counter()
        self.frames += 1
        if plan.detected:
            self.detections += 1
            self._since_detection = 0
            self._redetect = ""
        elif self._since_detection is not None:
            self._since_detection += 1
        if not self.boxed:  # an opaque pipeline: detector and WiLoR in one call
            out = self.tracker.update(hands, t)
            self._last_detected = len(out)
            return out
        if len(hands) != len(plan.tracks):
            raise ValueError(f"finish needs one hand per planned box: {len(plan.tracks)} boxes, {len(hands)} hands")
        H, W = np.shape(frame)[:2]
        tracks, kept, extra, dropped = [], [], [], []
        for i, (track, hand) in enumerate(zip(plan.tracks, hands)):
            if plan.detected:
                kp = np.asarray(hand.keypoints_2d, np.float64)
                score = 0.0
                if np.all(np.isfinite(kp)):
                    new_box = box_from_keypoints(kp, track.box_scale, track.box_offset)
                    score = float(box_iou(plan.boxes[i], new_box)[0, 0])
                changes = {}
                if plan.detector_keypoints is not None:
                    changes["detector_keypoints"] = plan.detector_keypoints[i]
                hand = dataclasses.replace(hand, **changes)
            else:
                score, why, new_box = self._check(track, plan.boxes[i], hand, (W, H))
                if why:
                    dropped.append(f"track {track.id}: {why}")
                    continue
                hand = dataclasses.replace(hand, box=new_box)
            tracks.append(track)
            kept.append(hand)
            extra.append({"detected": plan.detected, "tracking_score": round(score, 4)})
        if dropped:
            self._redetect = "; ".join(dropped)
            log.debug("frame at t=%.3f: %s", t, self._redetect)
        if plan.detected:
            self._last_detected = len(kept)
        out = self.tracker.commit(tracks, kept, t, detected=plan.detected, extra=extra)
        self.last_timings["track"] = time.perf_counter() - t0
        return out

    def __call__(self, frame: np.ndarray, t: float) -> list[Hand]:
        """One frame (H, W, 3) RGB uint8 at time t (seconds, increasing) -> its hands."""
        self.last_timings = {}
        plan = self.plan(frame, t)
        t0 = time.perf_counter()
        hands = self.predict(frame, plan)
        self.last_timings["wilor"] = time.perf_counter() - t0
        out = self.finish(frame, t, plan, hands)
        self.last_timings["total"] = sum(v for k, v in self.last_timings.items() if k != "total")
        return out


# ------------------------------------------------------------------------------------------- stops
class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that it stops a run the same way."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread. A second SIGTERM
    gets the previous handler (by default: the process ends at once). No effect outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, previous)
        raise Terminated("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
