"""Video round trips with a fake pipeline, partial output after a crash, kills, damaged input, track ids, One Euro
smoothing, the loop shared with `live` and its mirror view."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mlx_hands.pipeline.tracking import HandTracker, OneEuroFilter, box_iou
from mlx_hands.pipeline.video import iter_frames, process_video
from test_render import faces, make_hand

ROOT = Path(__file__).resolve().parents[1]
VW, VH, FPS = 160, 120, 10.0
VFOCAL = 5000 / 256 * VW


def write_video(path, n=12, size=(VW, VH), fps=FPS, codec="mp4v"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    assert writer.isOpened()
    for i in range(n):
        frame = np.full((size[1], size[0], 3), 30, np.uint8)
        cv2.putText(frame, str(i), (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        frame[:, :, 2] = 200  # BGR: red everywhere
        writer.write(frame)
    writer.release()
    return path


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n, size = 0, None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        n, size = n + 1, (f.shape[1], f.shape[0])
    cap.release()
    return n, size


class FakePipe:
    """Stands in for HandPosePipeline: one right hand drifting right, one left hand drifting left."""

    def __init__(self, fail_at: int | None = None, error=RuntimeError):
        self.calls = 0
        self.fail_at = fail_at
        self.error = error
        self.shapes = []

    def faces(self, is_right: bool = True):
        return faces() if is_right else faces()[:, ::-1]

    def __call__(self, rgb):
        if self.calls == self.fail_at:
            raise self.error("boom")
        self.shapes.append(rgb.shape)
        k = self.calls
        self.calls += 1
        kw = dict(depth=6.0, image_size=(VW, VH), focal=VFOCAL)
        return [make_hand(True, (50 + 2 * k, 80), **kw), make_hand(False, (110 - 2 * k, 80), **kw)]


def test_video_round_trip(tmp_path):
    src = write_video(tmp_path / "clip.mp4")
    pipe = FakePipe()
    summary = process_video(pipe, src, tmp_path / "out", progress=False)
    assert summary.complete and summary.frames == 12 and pipe.calls == 12 and summary.tracks == 2
    assert pipe.shapes[0] == (VH, VW, 3)
    n, size = count_frames(summary.video_path)
    assert n == 12 and size == (VW, VH)
    lines = (tmp_path / "out" / "clip.jsonl").read_text().splitlines()
    assert len(lines) == 12
    recs = [json.loads(line) for line in lines]
    assert [r["frame"] for r in recs] == list(range(12))
    np.testing.assert_allclose([r["time"] for r in recs], np.arange(12) / FPS, atol=1e-6)
    ids = {(h["side"], h["track_id"]) for r in recs for h in r["hands"]}
    assert ids == {("right", 0), ("left", 1)}
    assert "vertices" not in recs[0]["hands"][0]  # large; only with include_vertices
    meta = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert meta["frames"] == 12 and meta["complete"] is True
    # the annotated video shows the meshes: frames differ from the plain input where the hands are
    cap = cv2.VideoCapture(summary.video_path)
    ok, frame = cap.read()
    cap.release()
    plain = next(iter_frames(src))[2][:, :, ::-1]
    assert ok and np.abs(frame.astype(int) - plain).max() > 60


def test_video_options(tmp_path):
    src = write_video(tmp_path / "clip.mp4")
    s = process_video(FakePipe(), src, tmp_path, render=False, max_frames=5, include_vertices=True, progress=False)
    assert s.frames == 5 and s.video_path is None
    assert not list(tmp_path.glob("*_annotated*"))
    rec = json.loads((tmp_path / "clip.jsonl").read_text().splitlines()[0])
    assert np.shape(rec["hands"][0]["vertices"]) == (778, 3)
    s = process_video(FakePipe(), src, tmp_path / "avi", codec="MJPG", smooth=False, progress=False)
    assert s.video_path.endswith(".avi") and count_frames(s.video_path)[0] == 12


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_partial_output_after_crash_is_readable(tmp_path, error):
    src = write_video(tmp_path / "clip.mp4", n=12)
    try:
        process_video(FakePipe(fail_at=7, error=error), src, tmp_path / "out", progress=False)
    except error as e:
        assert "boom" in str(e)
        # checked while the traceback (and so the function's locals) is alive: the writer must have been
        # released explicitly, not by garbage collection
        n, size = count_frames(tmp_path / "out" / "clip_annotated.mp4")
    else:
        pytest.fail("the pipeline error should propagate")
    assert n == 7 and size == (VW, VH)
    lines = (tmp_path / "out" / "clip.jsonl").read_text().splitlines()
    assert [json.loads(x)["frame"] for x in lines] == list(range(7))
    meta = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert meta["complete"] is False and meta["frames"] == 7


def test_bad_inputs_give_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such video"):
        process_video(FakePipe(), tmp_path / "missing.mp4", tmp_path, progress=False)
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(ValueError, match="cannot read this video"):
        process_video(FakePipe(), junk, tmp_path, progress=False)
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)).release()
    with pytest.raises(ValueError, match="no frames"):
        process_video(FakePipe(), empty, tmp_path / "e", progress=False)
    assert not (tmp_path / "e").exists()  # nothing written for a bad input
    src = write_video(tmp_path / "clip.mp4", n=3)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OSError, match="file.txt"):
        process_video(FakePipe(), src, blocker / "out", progress=False)
    with pytest.raises(ValueError, match="camera 99"):
        iter_frames(99)


def test_iter_frames_gives_rgb_and_times(tmp_path):
    src = write_video(tmp_path / "clip.mp4", n=4)
    got = list(iter_frames(src))
    assert [g[0] for g in got] == [0, 1, 2, 3]
    np.testing.assert_allclose([g[1] for g in got], np.arange(4) / FPS)
    r, g, b = got[0][2][60:, :, :].reshape(-1, 3).mean(0)
    assert r > 150 and b < 80  # written as BGR red, read back as RGB red
    assert len(list(iter_frames(str(src), max_frames=2))) == 2


# ------------------------------------------------------------------------------------------- tracking
def _frame(t, specs):
    return [make_hand(side, (x, 240), 15.0, curl=0.2) for side, x in specs]


def test_track_ids_stable_when_hands_cross():
    # right hand moves left, left hand moves right; they cross in the middle and keep their ids
    tr = HandTracker(smooth=False)
    seen = []
    for k in range(30):
        hands = _frame(k, [(True, 500 - 12 * k), (False, 140 + 12 * k)])
        out = tr.update(hands[::-1] if k % 2 else hands, k / 30)  # order in the list must not matter
        seen.append({h.side: h.track_id for h in out})
    assert all(s == seen[0] for s in seen) and seen[0]["right"] != seen[0]["left"]


def test_two_same_side_hands_keep_ids_by_overlap():
    tr = HandTracker(smooth=False)
    ids = []
    for k in range(20):
        out = tr.update(_frame(k, [(True, 150 + 3 * k), (True, 450 - 3 * k)])[::(-1) ** k], k / 30)
        ids.append(tuple(h.track_id for h in sorted(out, key=lambda h: h.box[0])))
    assert len(set(ids)) == 1 and len(set(ids[0])) == 2


def test_lost_hand_comes_back_with_its_id():
    tr = HandTracker(smooth=False, max_lost=10)
    first = tr.update(_frame(0, [(True, 300)]), 0.0)[0].track_id
    for k in range(1, 6):
        assert tr.update([], k / 30) == []
    back = tr.update(_frame(6, [(True, 315)]), 6 / 30)[0]  # moved a little while unseen
    assert back.track_id == first
    for k in range(7, 20):  # gone for longer than max_lost: the id is retired
        tr.update([], k / 30)
    assert tr.update(_frame(20, [(True, 300)]), 20 / 30)[0].track_id != first


def test_far_away_detection_starts_a_new_track():
    tr = HandTracker(smooth=False)
    a = tr.update(_frame(0, [(True, 100)]), 0.0)[0].track_id
    b = tr.update(_frame(1, [(True, 560)]), 1 / 30)[0].track_id
    assert a != b


def test_tracker_checks_time_and_leaves_inputs_alone():
    tr = HandTracker()
    hands = _frame(0, [(True, 300)])
    before = hands[0].keypoints_2d.copy()
    out = tr.update(hands, 1.0)
    assert hands[0].track_id is None and out[0].track_id == 0 and out[0] is not hands[0]
    np.testing.assert_array_equal(hands[0].keypoints_2d, before)
    with pytest.raises(ValueError, match="increase"):
        tr.update(hands, 1.0)


def test_box_iou():
    np.testing.assert_allclose(box_iou([0, 0, 10, 10], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]),
                               [[1.0, 1 / 3, 0.0]])


# ------------------------------------------------------------------------------------------- One Euro
def test_one_euro_reduces_jitter_and_follows_a_step():
    rng = np.random.default_rng(0)
    fps, n = 30.0, 90
    truth = np.where(np.arange(n) < 45, 0.0, 100.0)
    noisy = truth[:, None] + rng.normal(0, 2.0, (n, 21 * 2))  # 21 keypoints, pixels
    f = OneEuroFilter(min_cutoff=1.0, beta=0.02, d_cutoff=1.0)
    out = np.array([f(x, i / fps) for i, x in enumerate(noisy)])
    d_raw = np.diff(noisy[5:45], axis=0).std()
    d_out = np.diff(out[5:45], axis=0).std()
    assert d_out < d_raw / 4, (d_out, d_raw)
    err = np.abs(out[45:] - 100).max(axis=1)
    assert np.all(err[4:] < 6), err[:8]  # within a few frames of the jump, it is there (noise is 2 px)
    # beta = 0 is a plain low-pass: much slower on the same step
    g = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    slow = np.array([g(x, i / fps) for i, x in enumerate(noisy)])
    assert np.abs(slow[49] - 100).mean() > 20


def test_one_euro_uses_time_stamps():
    # The same samples arriving 10x further apart in time are smoothed less (the filter is in Hz, not frames).
    x = np.r_[np.zeros(5), np.ones(5)][:, None]
    fast, slow = OneEuroFilter(1.0), OneEuroFilter(1.0)
    a = [fast(v, i / 30) for i, v in enumerate(x)]
    b = [slow(v, i / 3) for i, v in enumerate(x)]
    assert b[5][0] > a[5][0] + 0.3
    with pytest.raises(ValueError, match="increase"):
        fast(x[0], 0.0)
    with pytest.raises(ValueError, match="positive"):
        OneEuroFilter(min_cutoff=0.0)


def test_tracker_smooths_every_field_and_keeps_raw():
    rng = np.random.default_rng(1)
    tr = HandTracker(smooth=True)
    raw_kp, out_kp, raw_t, out_t, raw_v, out_v = [], [], [], [], [], []
    for k in range(40):
        h = make_hand(True, (320, 240), 15.0)
        h.keypoints_2d = h.keypoints_2d + rng.normal(0, 2.0, (21, 2))
        h.cam_t = h.cam_t + rng.normal(0, [0.002, 0.002, 0.2])
        h.vertices = h.vertices + rng.normal(0, 0.001, h.vertices.shape)
        o = tr.update([h], k / 30)[0]
        np.testing.assert_array_equal(o.extra["raw"]["keypoints_2d"], h.keypoints_2d)
        raw_kp.append(h.keypoints_2d), out_kp.append(o.keypoints_2d)
        raw_t.append(h.cam_t), out_t.append(o.cam_t)
        raw_v.append(h.vertices), out_v.append(o.vertices)
    for raw, out in [(raw_kp, out_kp), (raw_t, out_t), (raw_v, out_v)]:
        raw, out = np.array(raw[10:]), np.array(out[10:])
        assert np.diff(out, axis=0).std() < np.diff(raw, axis=0).std() / 3
    # unsmoothed tracking passes values through
    h = make_hand(True)
    o = HandTracker(smooth=False).update([h], 0.0)[0]
    np.testing.assert_array_equal(o.keypoints_2d, h.keypoints_2d)


# ------------------------------------------------------------------------------------------- live
def test_live_explains_missing_gui(monkeypatch):
    from mlx_hands.commands import live

    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           NONE\n")
    msg = live.gui_problem()
    assert "opencv-python-headless" in msg and "pip install opencv-python" in msg
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           GTK3\n")
    monkeypatch.setattr(live.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert "no display" in live.gui_problem()
    monkeypatch.setenv("DISPLAY", ":0")
    assert live.gui_problem() is None


def test_live_cli_errors_are_one_line(monkeypatch, capsys):
    from mlx_hands import cli
    from mlx_hands.commands import live

    monkeypatch.setattr(live, "gui_problem", lambda: "no GUI here; pip install opencv-python")
    assert cli.main(["live", "--camera", "0"]) == 2
    err = capsys.readouterr().err
    assert "pip install opencv-python" in err and "Traceback" not in err
    monkeypatch.setattr(live, "gui_problem", lambda: None)
    assert cli.main(["live", "--camera", "99"]) == 2
    assert "camera 99 could not be opened" in capsys.readouterr().err


def test_live_stream_annotates_frames(tmp_path):
    from mlx_hands.commands.live import annotate_stream

    src = write_video(tmp_path / "cam.mp4", n=5)
    out = list(annotate_stream(FakePipe(), iter_frames(src)))
    assert len(out) == 5
    bgr, hands, fps = out[-1]
    assert bgr.shape == (VH, VW, 3) and fps > 0 and {h.track_id for h in hands} == {0, 1}


# ------------------------------------------------------------------------------------------- one loop, mirror
def test_live_and_video_share_one_loop(tmp_path):
    from mlx_hands.commands.live import annotate_stream

    src = write_video(tmp_path / "clip.mp4", n=6)
    process_video(FakePipe(), src, tmp_path / "out", progress=False)
    recs = [json.loads(x) for x in (tmp_path / "out" / "clip.jsonl").read_text().splitlines()]
    live = [hands for _, hands, _ in annotate_stream(FakePipe(), iter_frames(src))]
    assert len(live) == len(recs) == 6
    for rec, hands in zip(recs, live):
        assert [(h["track_id"], h["side"]) for h in rec["hands"]] == [(h.track_id, h.side) for h in hands]
        for h, hand in zip(rec["hands"], hands):  # the same smoothing in both
            np.testing.assert_allclose(h["keypoints_2d"], hand.keypoints_2d, atol=1e-3)


def test_mirror_flips_picture_and_drawings_but_not_the_labels():
    from mlx_hands.pipeline.video import draw_frame
    from mlx_hands.render.overlay import draw_box, draw_hands

    img = np.full((VH, VW, 3), 30, np.uint8)
    hand = make_hand(True, (45, 90), depth=6.0, image_size=(VW, VH), focal=VFOCAL, track_id=3)
    plain, mirror = draw_frame(img, [hand]), draw_frame(img, [hand], mirror=True)
    cols = lambda im: np.nonzero(np.abs(im.astype(int) - img).sum(axis=(0, 2)))[0].mean()  # noqa: E731
    assert cols(plain) < VW / 2 < cols(mirror)  # the hand on the left shows on the right
    geometry = np.ascontiguousarray(draw_hands(img, [hand], None, boxes=False)[:, ::-1])
    x1, y1, x2, y2 = hand.box
    expected = geometry.copy()
    draw_box(expected, dataclasses.replace(hand, box=np.array([VW - 1 - x2, y1, VW - 1 - x1, y2])))
    np.testing.assert_array_equal(mirror, expected)
    assert not np.array_equal(mirror, plain[:, ::-1])  # the label is written, not mirrored


def test_live_mirror_option(tmp_path):
    from mlx_hands import cli
    from mlx_hands.commands.live import annotate_stream
    from mlx_hands.pipeline.video import draw_frame

    argv = ["live", "--mirror", "--detect-every", "4", "--force-handedness", "left"]
    args = cli.build_parser(argv).parse_args(argv)
    assert args.mirror and args.detect_every == 4 and args.force_handedness == "left"
    src = write_video(tmp_path / "cam.mp4", n=3)
    rgb = next(iter_frames(src))[2]
    bgr, hands, _ = next(annotate_stream(FakePipe(), iter_frames(src), mirror=True, mesh=False))
    below_label = slice(40, None)
    np.testing.assert_array_equal(bgr[below_label], draw_frame(rgb, hands, mirror=True)[below_label][:, :, ::-1])


# ------------------------------------------------------------------------------------------- damaged input, stops
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from synth import write_tiny_model  # tiny WiLoR + detector + synthetic MANO, random weights

    folder = tmp_path_factory.mktemp("tiny")
    write_tiny_model(folder)
    return folder


def cut(path, fraction):
    data = path.read_bytes()
    out = path.with_name("cut_" + path.name)
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def write_faststart_mp4(path, n=30):
    import av

    box = av.open(str(path), "w", format="mp4", options={"movflags": "faststart"})  # the index first, as on the web
    s = box.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = VW, VH, "yuv420p"
    for i in range(n):
        img = np.full((VH, VW, 3), 8 * i % 255, np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            box.mux(p)
    for p in s.encode(None):
        box.mux(p)
    box.close()
    return path


@pytest.mark.parametrize("kind", ["avi", "mp4"])
def test_truncated_video_is_reported(tmp_path, kind):
    if kind == "avi":
        full = write_video(tmp_path / "clip.avi", n=30, codec="MJPG")
    else:
        full = write_faststart_mp4(tmp_path / "clip.mp4")
    damaged = cut(full, 0.5)
    s = process_video(FakePipe(), damaged, tmp_path / "out", progress=False)
    assert 0 < s.frames < 30 and s.frames_declared == 30
    assert s.complete is False and f"after {s.frames} of the 30 frames" in s.error and "truncated" in s.error
    meta = json.loads((tmp_path / "out" / f"{damaged.stem}.json").read_text())
    assert meta["complete"] is False and meta["error"] == s.error
    assert count_frames(s.video_path)[0] == s.frames
    ok = process_video(FakePipe(), full, tmp_path / "ok", progress=False)
    assert ok.complete and ok.error is None and ok.frames == 30


def test_cli_names_a_truncated_video_in_one_line(tmp_path, tiny_model, capsys):
    from mlx_hands import cli

    damaged = cut(write_video(tmp_path / "clip.avi", n=20, codec="MJPG"), 0.5)
    rc = cli.main(["predict", str(damaged), "-o", str(tmp_path / "out"), "--model", str(tiny_model), "--no-vertices"])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "error" in x]
    assert rc == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"{damaged}: error: the video ended after ") and "of the 20 frames" in lines[0]


def test_annotated_video_plays_when_cut_anywhere(tmp_path, monkeypatch, caplog):
    src = write_video(tmp_path / "clip.mp4", n=12)
    s = process_video(FakePipe(), src, tmp_path / "out", progress=False)
    assert s.video_path.endswith(".mp4") and count_frames(s.video_path)[0] == 12
    for fraction in (0.3, 0.7):  # a fragmented MP4: every prefix up to a whole frame plays
        n = count_frames(cut(Path(s.video_path), fraction))[0]
        assert 0 < n < 12
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV missing: an MJPEG AVI, also readable when cut
    s = process_video(FakePipe(), src, tmp_path / "noav", progress=False)
    assert s.video_path.endswith(".avi") and "PyAV is not installed" in caplog.text
    assert 0 < count_frames(cut(Path(s.video_path), 0.5))[0] < 12


def _start_predict(tmp_path, model, n_frames=80):
    clip = write_video(tmp_path / "clip.mp4", n=n_frames)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    err = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlx_hands", "predict", str(clip), "--out", str(out),
                             "--model", str(model), "--conf", "0", "--max-det", "2", "--no-vertices"],
                            env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path)
    jsonl = out / "clip.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 3:
            return proc, out
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"predict did not reach 3 frames (exit {proc.poll()}): {(tmp_path / 'stderr.txt').read_text()[-2000:]}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_video_run_leaves_playable_results(tmp_path, tiny_model, sig):
    proc, out = _start_predict(tmp_path, tiny_model)
    proc.send_signal(sig)
    rc = proc.wait(timeout=60)
    records = [json.loads(x) for x in (out / "clip.jsonl").read_text().splitlines()]  # every line whole
    assert [r["frame"] for r in records] == list(range(len(records))) and 3 <= len(records) < 80
    n, size = count_frames(out / "clip_annotated.mp4")
    summary = json.loads((out / "clip.json").read_text())
    assert size == (VW, VH) and summary["complete"] is False
    if sig == signal.SIGTERM:  # handled like Ctrl-C: everything closed, the summary says why
        assert rc == 130 and summary["frames"] == len(records)
        assert summary["error"].startswith(f"terminated (SIGTERM) after {len(records)} frames")
        assert len(records) <= n <= len(records) + 1  # a frame goes into the video just before its line
    else:  # no chance to clean up: the summary is the last one written while running, and the MP4 muxer
        # writes a frame's fragment when the next frame arrives, so the last frame can be missing
        assert rc == -signal.SIGKILL and summary["error"].startswith("not finished")
        assert len(records) - 1 <= n <= len(records)


class BoxedPipe:
    """detect + predict_with_boxes (the tracking route) with fixed hands; records what WiLoR was asked for."""

    def __init__(self):
        self.include_vertices = []
        self.kw = dict(depth=6.0, image_size=(VW, VH), focal=VFOCAL)

    def faces(self, is_right: bool = True):
        return faces() if is_right else faces()[:, ::-1]

    def detect(self, rgb):
        from mlx_hands.pipeline.detection import Detections

        boxes = np.array([make_hand(True, (50, 80), **self.kw).box], np.float32)
        return Detections(boxes, np.array([0.9], np.float32), np.array([1]), np.zeros((1, 21, 3), np.float32))

    def predict_with_boxes(self, rgb, boxes, is_right, *, confidence=None, include_vertices=True):
        self.include_vertices.append(include_vertices)
        return [dataclasses.replace(make_hand(bool(r), (50, 80), **self.kw), box=np.asarray(b))
                for b, r in zip(boxes, is_right)]


def test_tracking_route_in_process_video(tmp_path):
    pipe = BoxedPipe()
    s = process_video(pipe, write_video(tmp_path / "clip.mp4", n=12), tmp_path / "out", detect_every=5, progress=False)
    assert s.complete and s.detections == 3 and s.settings["track"] is True and s.settings["detect_every"] == 5
    assert all(pipe.include_vertices)  # drawn, so computed, though not written
    recs = [json.loads(x) for x in (tmp_path / "out" / "clip.jsonl").read_text().splitlines()]
    assert [r["hands"][0]["extra"]["detected"] for r in recs] == [k % 5 == 0 for k in range(12)]
    assert "vertices" not in recs[0]["hands"][0]
    pipe = BoxedPipe()
    s = process_video(pipe, tmp_path / "clip.mp4", tmp_path / "plain", render=False, track=False, progress=False)
    assert s.detections == 12 and not any(pipe.include_vertices)
