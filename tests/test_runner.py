"""HandPosePipeline and `mlx-hands predict` around fake networks (no weights): batching, errors, the golden
route end to end (crops handed to the network, 2D keypoints), timings, JSON output."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import mlx.core as mx
import numpy as np
import pytest

from mlx_hands.config import DetectorConfig, WiLoRConfig
from mlx_hands.models.wilor import WiLoR
from mlx_hands.pipeline.runner import HandPosePipeline

GOLDEN = Path(__file__).parent / "fixtures" / "pipeline_golden.npz"


class FakeWiLoR:
    """Stands in for models.wilor.WiLoR: records its inputs, returns given or seeded outputs."""

    def __init__(self, outputs: dict | None = None):
        self.config = WiLoRConfig()
        self.faces = np.array([[0, 1, 2], [2, 1, 3]], np.int32)
        self.calls: list[np.ndarray] = []
        self.focals: list[float] = []
        self.outputs = outputs

    input_window = WiLoR.input_window

    def __call__(self, crops: mx.array, focal_length=None):
        assert isinstance(crops, mx.array)
        self.calls.append(np.array(crops))
        self.focals.append(focal_length)
        B = crops.shape[0]
        if self.outputs is not None:
            o = {k: v[:B] for k, v in self.outputs.items()}
        else:
            rng = np.random.default_rng(B)
            o = {
                "cam": np.stack([rng.uniform(4, 9, B), rng.uniform(-0.1, 0.1, B), rng.uniform(-0.1, 0.1, B)], 1),
                "keypoints_3d": rng.normal(0, 0.03, (B, 21, 3)),
                "vertices": rng.normal(0, 0.03, (B, 778, 3)),
                "global_orient": rng.normal(0, 1, (B, 1, 3)),
                "hand_pose": rng.normal(0, 0.3, (B, 15, 3)),
                "betas": rng.normal(0, 1, (B, 10)),
            }
        # bfloat16 where the real model may return it: the runner must widen before numpy
        return SimpleNamespace(**{k: mx.array(np.asarray(v, np.float32)).astype(mx.bfloat16 if k == "betas" else mx.float32)
                                  for k, v in o.items()})


class FakeDetector:
    """Stands in for models.yolo.YOLOPose: decoded head output (1, 4 + 2 + 63, A) with fixed candidates given as
    (x1, y1, x2, y2 in original pixels, left score, right score); the letterbox scale is applied here."""

    def __init__(self, candidates, scale):
        self.config = DetectorConfig(imgsz=640)
        self.candidates, self.scale = candidates, scale
        self.inputs = []

    def __call__(self, x: mx.array):
        self.inputs.append(tuple(x.shape))
        A = len(self.candidates)
        out = np.zeros((1, 4 + 2 + 63, A), np.float32)
        for a, (x1, y1, x2, y2, sl, sr) in enumerate(self.candidates):
            x1, y1, x2, y2 = (v * self.scale for v in (x1, y1, x2, y2))
            out[0, :6, a] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, sl, sr]
            out[0, 6::3, a] = (x1 + x2) / 2
            out[0, 7::3, a] = (y1 + y2) / 2
            out[0, 8::3, a] = 0.9
        return mx.array(out)


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN))


def golden_outputs(g):
    return {"cam": g["in_pred_cam"], "keypoints_3d": g["in_pred_keypoints_3d"], "vertices": g["in_pred_vertices"],
            "global_orient": g["in_global_orient"], "hand_pose": g["in_hand_pose"], "betas": g["in_betas"]}


def test_golden_route_end_to_end(golden):
    model = FakeWiLoR(golden_outputs(golden))
    pipe = HandPosePipeline(model)
    hands = pipe.predict_with_boxes(golden["image_rgb"], golden["boxes"], golden["is_right"])
    # all hands in one batch, only the 192 columns the network reads
    assert len(model.calls) == 1 and model.calls[0].shape == (4, 256, 192, 3)
    err = np.abs(model.calls[0] - golden["crops_u8"][:, :, 32:-32].astype(np.float32))
    assert err.mean() <= 0.26 and err.max() <= 0.5 + 1e-3  # what the network sees = the reference's crops
    kp2 = np.stack([h.keypoints_2d for h in hands])
    assert np.abs(kp2 - golden["f0_keypoints_2d"]).max() <= 0.5
    np.testing.assert_allclose(kp2, golden["f0_keypoints_2d"], atol=0.01)
    assert [h.side for h in hands] == ["right", "left", "right", "left"]
    assert all(h.confidence == 1.0 for h in hands)
    np.testing.assert_allclose(np.stack([h.vertices for h in hands]), golden["out_pred_vertices"], atol=1e-7)
    assert hands[1].betas.dtype == np.float32  # bfloat16 output widened


def test_focal_length_setting_matches_reference(golden):
    pipe = HandPosePipeline(FakeWiLoR(golden_outputs(golden)), focal_length=float(golden["focals"][1]))
    hands = pipe.predict_with_boxes(golden["image_rgb"], golden["boxes"], golden["is_right"])
    np.testing.assert_allclose(np.stack([h.keypoints_2d for h in hands]), golden["f1_keypoints_2d"], atol=0.01)
    assert hands[0].focal_length == pytest.approx(golden["f1_scaled_focal"][0])
    # the same camera in pixels
    px = golden["f1_scaled_focal"][0]
    model_px = FakeWiLoR(golden_outputs(golden))
    hands_px = HandPosePipeline(model_px).predict_with_boxes(
        golden["image_rgb"], golden["boxes"], golden["is_right"], focal_length_px=px)
    np.testing.assert_allclose(hands_px[2].cam_t, hands[2].cam_t, rtol=1e-6)
    # the network itself gets the same F (crop pixels) both ways, as WiLoR-mini passes focal_length to RefineNet
    assert pipe.model.focals == [pytest.approx(float(golden["focals"][1]))]
    assert model_px.focals == [pytest.approx(float(golden["focals"][1]), rel=1e-9)]


def test_predict_with_boxes_options_and_timings():
    img = np.full((120, 160, 3), 90, np.uint8)
    model = FakeWiLoR()
    pipe = HandPosePipeline(model)
    hands = pipe.predict_with_boxes(img, [[10, 20, 50, 70], [60, 10, 100, 60]], [True, False], confidence=[0.8, 0.7],
                                    include_vertices=False)
    assert len(hands) == 2 and len(model.calls) == 1
    assert hands[0].vertices is None and hands[1].confidence == pytest.approx(0.7)
    assert hands[0].keypoints_2d.shape == (21, 2) and hands[0].hand_pose.shape == (15, 3)
    assert hands[0].global_orient.shape == (3,) and np.allclose(hands[0].camera_center, [80, 60])
    assert set(pipe.last_timings) >= {"detect", "crop", "model", "post", "total"}
    assert all(v >= 0 for v in pipe.last_timings.values())
    np.testing.assert_array_equal(pipe.faces(False), model.faces[:, [0, 2, 1]])  # reversed winding


def test_zero_boxes_skip_the_model():
    model = FakeWiLoR()
    pipe = HandPosePipeline(model)
    assert pipe.predict_with_boxes(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 4)), []) == []
    assert model.calls == [] and pipe.last_timings["model"] == 0.0


@pytest.mark.parametrize(
    "boxes, is_right, match",
    [
        ([[10, 10, 10, 40]], [1], "zero or negative size"),
        ([[30, 10, 20, 40]], [1], "zero or negative size"),
        ([[200, 10, 260, 40]], [1], "outside"),
        ([[-50, -50, -10, -10]], [0], "outside"),
        ([[10, 10, 40, 40]], [1, 0], "one entry per box"),
        ([[10, 10, 40, 40]], [2], "0 \\(left\\) / 1 \\(right\\)"),
        ([[10, 10, 40]], [1], "shape \\(N, 4\\)"),
        ([[10, np.nan, 40, 40]], [1], "NaN"),
    ],
)
def test_bad_boxes_raise(boxes, is_right, match):
    pipe = HandPosePipeline(FakeWiLoR())
    with pytest.raises(ValueError, match=match):
        pipe.predict_with_boxes(np.zeros((100, 150, 3), np.uint8), boxes, is_right)


def test_no_detector_and_bad_image():
    pipe = HandPosePipeline(FakeWiLoR())
    with pytest.raises(ValueError, match="predict_with_boxes"):
        pipe(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        pipe.predict_with_boxes(np.zeros((10, 10, 3)), [[1, 1, 5, 5]], [1])


def detector_pipeline(model=None):
    # 384x512 image, imgsz 640 -> letterbox scale 1.25, 480x640, no padding
    cands = [(300, 60, 363, 142, 0.05, 0.91), (20, 100, 120, 220, 0.88, 0.1), (200, 200, 240, 240, 0.2, 0.1)]
    det = FakeDetector(cands, 1.25)
    return HandPosePipeline(model or FakeWiLoR(), det), det


def test_call_runs_detector_then_one_batch(golden):
    model = FakeWiLoR()
    pipe, det = detector_pipeline(model)
    hands = pipe(golden["image_rgb"])
    assert det.inputs == [(1, 480, 640, 3)]
    assert [h.side for h in hands] == ["right", "left"]  # the 0.2 candidate is under conf 0.3
    assert [round(h.confidence, 2) for h in hands] == [0.91, 0.88]
    np.testing.assert_allclose(hands[0].box, [300, 60, 363, 142], atol=1e-4)
    assert hands[0].detector_keypoints.shape == (21, 3)
    assert len(model.calls) == 1 and model.calls[0].shape[0] == 2
    assert pipe.last_timings["detect"] > 0
    assert pipe(golden["image_rgb"], conf=0.95) == []
    assert len(pipe(golden["image_rgb"], conf=0.1)) == 3


def test_zero_size_detections_are_dropped(golden):
    det = FakeDetector([(0, 60, 0.2, 142, 0.9, 0.1), (300, 60, 363, 142, 0.05, 0.91)], 1.25)  # first: 0 px wide
    model = FakeWiLoR()
    hands = HandPosePipeline(model, det)(golden["image_rgb"])
    assert [h.side for h in hands] == ["right"] and model.calls[0].shape[0] == 1


# ------------------------------------------------------------------ mlx-hands predict


@pytest.fixture
def fake_from_pretrained(monkeypatch):
    def from_pretrained(cls, path_or_repo=None, **kw):
        settings = {k: v for k, v in kw.items() if k not in ("mano_path", "dtype", "revision")}
        pipe, _ = detector_pipeline()
        for k, v in settings.items():
            setattr(pipe, k, v)
        pipe.info = {"model": path_or_repo, "dtype": kw.get("dtype")}
        return pipe

    monkeypatch.setattr(HandPosePipeline, "from_pretrained", classmethod(from_pretrained))


def test_cli_predict_folder(tmp_path, golden, fake_from_pretrained, capsys):
    from mlx_hands import cli

    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "b.png"), golden["image_rgb"][:, :, ::-1])
    cv2.imwrite(str(src / "a.png"), golden["image_rgb"][:, :, ::-1])
    (src / "c.jpg").write_bytes(b"broken")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    rc = cli.main(["predict", str(src), "--out", str(out), "--model", "some/repo", "--focal-length", "900"])
    captured = capsys.readouterr()
    assert rc == 1  # c.jpg failed, the others were written
    lines = captured.out.strip().splitlines()
    assert [l.split(":")[0] for l in lines] == ["a.png", "b.png"]
    assert lines[0].startswith("a.png: 2 hands (right 0.91, left 0.88) ") and lines[0].endswith(" ms")
    assert "c.jpg: error:" in captured.err
    d = json.loads((out / "a.json").read_text())
    assert d["width"] == 512 and d["height"] == 384 and d["model"]["model"] == "some/repo"
    assert d["settings"]["focal_length_px"] == 900 and d["hands"][0]["focal_length"] == 900
    h = d["hands"][0]
    assert h["side"] == "right" and len(h["vertices"]) == 778 and len(h["keypoints_2d"]) == 21
    assert "keypoints_3d" in d["units"] and {"detect", "model"} <= set(d["timings_ms"])
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.json"]


def test_cli_predict_no_vertices_and_missing(tmp_path, golden, fake_from_pretrained, capsys):
    from mlx_hands import cli

    f = tmp_path / "photo.jpg"
    cv2.imwrite(str(f), golden["image_rgb"][:, :, ::-1])
    rc = cli.main(["predict", str(f), str(tmp_path / "nope.png"), "-o", str(tmp_path / "o"), "--no-vertices"])
    assert rc == 1 and "nope.png: error: no such file" in capsys.readouterr().err
    d = json.loads((tmp_path / "o" / "photo.json").read_text())
    assert "vertices" not in d["hands"][0]
    assert cli.main(["predict", str(f), "-o", str(tmp_path / "o"), "--conf", "2"]) == 2


def test_real_tiny_networks_through_the_pipeline():
    """The real WiLoR and YOLOPose classes (tiny configs, random weights, synthetic MANO) fit the runner."""
    from synth import make_mano

    from mlx_hands.models.wilor import WiLoR
    from mlx_hands.models.yolo import YOLOPose
    from mlx_hands.synthetic import TINY

    model = WiLoR(TINY)
    model.mano.set_data(make_mano(0))
    det = YOLOPose(DetectorConfig(width=0.25, depth=0.33, imgsz=160))
    pipe = HandPosePipeline(model, det, conf=0.0)  # random weights: take whatever the detector proposes
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3)).astype(np.uint8)
    hands = pipe(img, max_det=2)
    assert 1 <= len(hands) <= 2
    h = hands[0]
    assert h.vertices.shape == (778, 3) and h.keypoints_2d.shape == (21, 2) and h.detector_keypoints.shape == (21, 3)
    assert np.isfinite(h.keypoints_2d).all() and np.isfinite(h.cam_t).all()
    hands = pipe.predict_with_boxes(img, [[10, 10, 60, 80], [90, 40, 150, 110]], [0, 1])
    assert [x.side for x in hands] == ["left", "right"] and pipe.faces().shape[1] == 3


def test_cli_predict_video_dispatch(tmp_path, fake_from_pretrained, monkeypatch):
    from mlx_hands import cli
    from mlx_hands.commands import predict

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00")
    calls = []

    def process_video(pipe, path, out_dir, include_vertices=True, **tracking):
        calls.append((path, out_dir, include_vertices, tracking["detect_every"]))
        return SimpleNamespace(complete=True, frames=1, hands=0, tracks=0, detections=1, processing_fps=1.0,
                               results_path=str(out_dir / "clip.jsonl"), error=None)

    monkeypatch.setattr(predict, "process_video", process_video)
    assert cli.main(["predict", str(clip), "-o", str(tmp_path / "o"), "--detect-every", "4"]) == 0
    assert cli.main(["predict", str(clip), "-o", str(tmp_path / "o"), "--vertices"]) == 0
    # a video's JSON Lines hold the vertices only when asked (they are large)
    assert calls == [(clip, tmp_path / "o", False, 4), (clip, tmp_path / "o", True, 10)]


def test_from_pretrained_on_a_tiny_converted_dir(tmp_path):
    from synth import write_tiny_model

    write_tiny_model(tmp_path, source={"checkpoint": "wilor_final.ckpt"})
    pipe = HandPosePipeline.from_pretrained(tmp_path, dtype="float16", conf=0.0, rescale_factor=2.0)
    assert pipe.detector is not None and pipe.rescale_factor == 2.0 and pipe.conf == 0.0
    assert pipe.info["dtype"] == "float16" and pipe.info["source"] == {"checkpoint": "wilor_final.ckpt"}
    assert pipe.info["model_bytes"] > 0
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3)).astype(np.uint8)
    hands = pipe(img, max_det=1)
    assert len(hands) == 1 and np.isfinite(hands[0].vertices).all()
    wilor_only = HandPosePipeline.from_pretrained(tmp_path, detector=False)
    assert wilor_only.detector is None
