"""HandStream: the detector every N frames and on loss, boxes from keypoints, the handedness lock, force/swap.

The pipeline here is a scripted scene (numpy only, no network): it knows where each hand is in each frame,
its detector returns those hands' boxes (with scripted classes), and its "WiLoR" returns the true hand found
inside each box it is given, estimated as the side it is asked for, or collapsed keypoints when the box holds
no hand. The frame index travels in the frame's first pixel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mlx_hands.pipeline.detection import Detections
from mlx_hands.pipeline.stream import HandStream
from mlx_hands.pipeline.tracking import (
    DEFAULT_BOX_SCALE,
    HandTracker,
    Track,
    box_from_keypoints,
    box_iou,
    keypoint_extent,
    visible_fraction,
)
from test_render import make_hand

W, H = 640, 480


def frame(k: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[0, 0, :2] = k % 256, k // 256
    return img


def index(img: np.ndarray) -> int:
    return int(img[0, 0, 0]) + 256 * int(img[0, 0, 1])


@dataclasses.dataclass
class Truth:
    centre: tuple[float, float]  # where the wrist is, pixels
    is_right: bool = True
    cls: bool | None = None  # the detector's class (None: the truth)
    score: float = 0.9


class ScenePipe:
    """Stands in for HandPosePipeline: `scene(k)` -> the list of Truth of frame k."""

    def __init__(self, scene):
        self.scene = scene
        self.detected: list[int] = []  # frames the detector ran on
        self.wilor: list[tuple[int, np.ndarray, np.ndarray]] = []  # (frame, boxes, is_right) per WiLoR call
        self.conf = 0.3

    def detect(self, img):
        k = index(img)
        self.detected.append(k)
        truths = [h for h in self.scene(k) if 0 <= h.centre[0] < W and 0 <= h.centre[1] < H]  # in the picture
        boxes = np.array([make_hand(h.is_right, h.centre).box for h in truths], np.float32).reshape(-1, 4)
        boxes = np.clip(boxes, 0, [W, H, W, H])  # as a real detector's
        cls = [int(h.is_right if h.cls is None else h.cls) for h in truths]
        return Detections(boxes, np.array([h.score for h in truths], np.float32), np.array(cls, np.int64),
                          np.zeros((len(truths), 21, 3), np.float32))

    def predict_with_boxes(self, img, boxes, is_right, *, confidence=None, include_vertices=True):
        k = index(img)
        boxes, is_right = np.asarray(boxes, np.float64), np.asarray(is_right, bool)
        self.wilor.append((k, boxes.copy(), is_right.copy()))
        out = []
        for i, box in enumerate(boxes):
            centre = (box[:2] + box[2:]) / 2
            inside = [h for h in self.scene(k)  # the hand's middle: 40 px above the wrist
                      if box[0] <= h.centre[0] <= box[2] and box[1] <= h.centre[1] - 40 <= box[3]]
            if inside:
                t = min(inside, key=lambda h: np.hypot(h.centre[0] - centre[0], h.centre[1] - centre[1]))
                hand = make_hand(bool(is_right[i]), t.centre)
            else:  # no hand in the crop: what a network does then is arbitrary; here the keypoints collapse
                hand = make_hand(bool(is_right[i]), tuple(centre))
                hand.keypoints_2d = np.repeat(centre[None], 21, axis=0)
            c = 1.0 if confidence is None else float(confidence[i])
            out.append(dataclasses.replace(hand, box=box.copy(), confidence=c))
        return out


def run(stream, n, t0=0, fps=30.0):
    return [stream(frame(k), k / fps) for k in range(t0, t0 + n)]


def two_hands(k):
    return [Truth((200 + 2 * k, 300)), Truth((440 - 2 * k, 300), is_right=False)]


# ------------------------------------------------------------------------------------------- geometry
def test_box_from_keypoints():
    kp = np.array([[100, 100], [140, 100], [100, 180], [140, 180.0]])  # 40 x 80, centre (120, 140)
    np.testing.assert_allclose(box_from_keypoints(kp, 1.0), [100, 100, 140, 180])
    np.testing.assert_allclose(box_from_keypoints(kp, 1.5), [90, 80, 150, 200])
    np.testing.assert_allclose(box_from_keypoints(kp, 1.0, offset=(0.25, 0)), [120, 100, 160, 180])  # 0.25 x 80 px
    flat = np.array([[100, 100], [180, 101.0]])  # edge-on: the width floor is a quarter of the length
    np.testing.assert_allclose(box_from_keypoints(flat, 1.0), [100, 90.5, 180, 110.5])
    assert keypoint_extent(kp) == 80
    assert visible_fraction([-10, 0, 10, 10], (100, 100)) == 0.5 and visible_fraction([0, 0, 0, 5], (9, 9)) == 0


def test_a_track_learns_its_detectors_padding():
    hand = make_hand(True, (300, 300))
    tr = Track(0, True, hand.box, 0.0)
    tr.calibrate(hand.box, hand.keypoints_2d)
    expected = np.max(hand.box[2:] - hand.box[:2]) / keypoint_extent(hand.keypoints_2d)
    assert tr.box_scale == pytest.approx(expected) and tr.box_scale != DEFAULT_BOX_SCALE
    # with the learnt scale and offset, the keypoints give back the detector's box
    tr.keypoints_2d = hand.keypoints_2d
    assert box_iou(tr.keypoint_box(), hand.box)[0, 0] > 0.95
    # an implausible ratio (a failed estimate: keypoints collapsed) is not learnt
    tr2 = Track(1, True, hand.box, 0.0)
    tr2.calibrate(hand.box, hand.keypoints_2d * 0.1 + 250)
    assert tr2.box_scale == DEFAULT_BOX_SCALE and tr2.extent == 0


# ------------------------------------------------------------------------------------------- when the detector runs
def test_detector_runs_every_n_frames_and_boxes_come_from_keypoints():
    pipe = ScenePipe(two_hands)
    stream = HandStream(pipe, detect_every=5)
    out = run(stream, 3)
    padding = {t.id: (t.box_scale, t.box_offset.copy()) for t in stream.tracker.tracks}  # learnt at frame 0
    out += run(stream, 18, t0=3)
    assert pipe.detected == [0, 5, 10, 15, 20]
    assert stream.detections == 5 and stream.frames == 21
    assert all(sorted((h.side, h.track_id) for h in hands) == [("left", 1), ("right", 0)] for hands in out)
    assert [hands[0].extra["detected"] for hands in out] == [k % 5 == 0 for k in range(21)]
    # a tracked frame's boxes are the previous frame's keypoints, padded as the detector pads this hand
    k, boxes, _ = pipe.wilor[3]
    assert k == 3
    prev = {h.track_id: h.extra["raw"]["keypoints_2d"] for h in out[2]}
    for tr_id, box in zip([0, 1], boxes):
        np.testing.assert_allclose(box, box_from_keypoints(prev[tr_id], *padding[tr_id]))
    # ... which is where the detector would have put them (the hands move 2 px a frame)
    truth = [make_hand(h.is_right, h.centre).box for h in two_hands(3)]
    assert box_iou(boxes, truth).diagonal().min() > 0.9
    assert all(h.extra["tracking_score"] > 0.9 for hands in out for h in hands if not h.extra["detected"])


def test_track_false_runs_the_detector_on_every_frame():
    pipe = ScenePipe(two_hands)
    out = run(HandStream(pipe, track=False), 6)
    assert pipe.detected == list(range(6)) and all(len(h) == 2 for h in out)


def test_a_hand_that_vanishes_is_dropped_and_the_detector_runs_next():
    pipe = ScenePipe(lambda k: two_hands(k) if k < 3 else two_hands(k)[:1])
    stream = HandStream(pipe, detect_every=10)
    out = run(stream, 6)
    assert [len(h) for h in out] == [2, 2, 2, 1, 1, 1]
    assert pipe.detected == [0, 4]  # frame 3: the crop held no hand (keypoints collapsed): detector on frame 4
    assert {h.track_id for h in out[5]} == {0}


def test_a_hand_leaving_the_frame_runs_the_detector_in_that_frame():
    pipe = ScenePipe(lambda k: [Truth((200, 300)), Truth((500 + 25 * k, 300), is_right=False)])
    stream = HandStream(pipe, detect_every=100)
    out = run(stream, 8)
    assert pipe.detected[0] == 0 and len(pipe.detected) >= 2
    assert pipe.detected[1] <= 7  # the wrist leaves the picture at frame 6
    assert all(visible_fraction(b, (W, H)) >= 0.5 for _, boxes, _ in pipe.wilor for b in boxes)
    assert [h.track_id for h in out[-1]] == [0] and len(out[4]) == 2


def test_fewer_hands_than_detected_runs_the_detector():
    pipe = ScenePipe(two_hands)
    stream = HandStream(pipe, detect_every=50)
    run(stream, 3)
    stream.tracker.tracks[1].lost = 1  # lost without a failed check (e.g. by a caller's reset of one track)
    stream(frame(3), 3 / 30)
    assert pipe.detected == [0, 3]


def test_new_hands_are_picked_up_at_the_next_detection():
    pipe = ScenePipe(lambda k: two_hands(k)[:1] + ([Truth((450, 150), is_right=False)] if k >= 2 else []))
    out = run(HandStream(pipe, detect_every=5), 8)
    assert [len(h) for h in out] == [1, 1, 1, 1, 1, 2, 2, 2]


def test_max_hands_stops_periodic_detection():
    three = lambda k: two_hands(k) + [Truth((320, 150), score=0.5)]  # noqa: E731
    pipe = ScenePipe(three)
    out = run(HandStream(pipe, detect_every=3, max_hands=2), 12)
    assert pipe.detected == [0]
    assert all(len(h) == 2 and {x.track_id for x in h} == {0, 1} for h in out)  # the two best scores


def test_no_hand_means_the_detector_runs_every_frame():
    pipe = ScenePipe(lambda k: [])
    out = run(HandStream(pipe, detect_every=5), 4)
    assert out == [[]] * 4 and pipe.detected == [0, 1, 2, 3] and pipe.wilor == []


# ------------------------------------------------------------------------------------------- handedness
def flicker(classes):
    """One right hand whose detector class per frame is `classes[k]` (1 right, 0 left)."""
    return ScenePipe(lambda k: [Truth((300 + k, 300), is_right=True, cls=bool(classes[k]))])


@pytest.mark.parametrize("detect_every", [1, 2])
def test_handedness_lock_needs_k_consecutive_disagreeing_detections(detect_every):
    K = 3
    # per detection: right, right, left, left (K-1), right, left, left, left (K: flips), left
    per_detection = [1, 1, 0, 0, 1, 0, 0, 0, 0]
    classes = np.repeat(per_detection, detect_every)
    pipe = flicker(classes)
    stream = HandStream(pipe, detect_every=detect_every, handedness_lock=K)
    out = run(stream, len(classes))
    sides = [h[0].side for h in out]
    flip = 7 * detect_every  # the K-th consecutive left detection
    assert sides == ["right"] * flip + ["left"] * (len(classes) - flip)
    assert {h[0].track_id for h in out} == {0}  # one track throughout
    # WiLoR ran with the locked side every time (the crop is mirrored for left hands)
    assert [bool(r[0]) for _, _, r in pipe.wilor] == [s == "right" for s in sides]
    assert stream.tracker.flips == 1


def test_handedness_lock_one_follows_the_detector():
    classes = [1, 0, 1, 0, 0]
    out = run(HandStream(flicker(classes), track=False, handedness_lock=1), 5)
    assert [h[0].side for h in out] == ["right", "left", "right", "left", "left"]
    assert {h[0].track_id for h in out} == {0}


def test_force_and_swap_handedness():
    pipe = ScenePipe(two_hands)
    out = run(HandStream(pipe, force_handedness="left", detect_every=2), 4)
    assert all(h.side == "left" for hands in out for h in hands)
    assert all(not r.any() for _, _, r in pipe.wilor)
    pipe = ScenePipe(two_hands)
    out = run(HandStream(pipe, swap_handedness=True, detect_every=2), 4)
    assert [sorted(h.side for h in hands) for hands in out] == [["left", "right"]] * 4
    by_id = {h.track_id: h.side for h in out[-1]}
    assert by_id == {0: "left", 1: "right"}  # the detector said right for track 0, left for track 1


def test_post_hoc_tracker_keeps_the_id_through_a_side_flip():
    # Behaviour change: tracks used to be kept per side, so a flicker started a new track.
    tr = HandTracker(smooth=False)
    ids = [tr.update([make_hand(bool(k % 3), (300 + k, 300))], k / 30)[0].track_id for k in range(9)]
    assert set(ids) == {0}


# ------------------------------------------------------------------------------------------- API
def test_plan_predict_finish_is_the_same_as_call():
    a, b = HandStream(ScenePipe(two_hands), detect_every=3), HandStream(ScenePipe(two_hands), detect_every=3)
    for k in range(7):
        img, t = frame(k), k / 30
        one = a(img, t)
        plan = b.plan(img, t)
        two = b.finish(img, t, plan, b.predict(img, plan))
        assert len(one) == len(two) and plan.detected == (k % 3 == 0)
        for x, y in zip(one, two):
            assert x.track_id == y.track_id and x.side == y.side
            np.testing.assert_array_equal(x.keypoints_2d, y.keypoints_2d)


def test_stream_options_and_time_are_checked():
    pipe = ScenePipe(two_hands)
    for kw, msg in [({"detect_every": 0}, "detect_every"), ({"force_handedness": "up"}, "force_handedness"),
                    ({"max_hands": 0}, "max_hands"), ({"handedness_lock": 0}, "handedness_lock"),
                    ({"min_tracking_score": 2.0}, "min_tracking_score")]:
        with pytest.raises(ValueError, match=msg):
            HandStream(pipe, **kw)

    def opaque(rgb):
        return []

    with pytest.raises(ValueError, match="detect"):
        HandStream(opaque, track=True)
    with pytest.raises(ValueError, match="side decides the crop"):
        HandStream(opaque, swap_handedness=True)
    assert HandStream(opaque).track is False
    stream = HandStream(pipe)
    stream(frame(0), 1.0)
    with pytest.raises(ValueError, match="increase"):
        stream(frame(1), 1.0)
