"""YOLOv8-pose hand detector: MLX network, detector.pt conversion, letterbox / NMS / rescaling.

Golden fixture (scripts/make_detector_golden.py, real ultralytics 8.1.34): a randomly initialised
YOLOv8-pose (nc 2, kpt_shape (21, 3), scale width 0.0625 / depth 0.33 / max_channels 512) saved as
ultralytics releases checkpoints (tests/fixtures/detector_tiny.pt, fp16), and, for three synthetic
images, the network input ultralytics built, its Pose-head output (fused and unfused model) and
the final boxes / scores / classes / keypoints of `YOLO(pt)(image_bgr, conf, iou, max_det)`.
"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_hands.config import DetectorConfig
from mlx_hands.convert import yolo as conv
from mlx_hands.transfer import to_device
from mlx_hands.models.yolo import YOLOPose
from mlx_hands.pipeline import detection as D

FIXTURES = Path(__file__).parent / "fixtures"
TINY = DetectorConfig(width=0.0625, depth=0.33, max_channels=512, imgsz=128)
PX_ATOL = 1e-3  # px on values up to ~500 (observed 1.2e-4: fp32 accumulation order)
SCORE_ATOL = 1e-5  # sigmoid outputs (observed 5e-7)


# ------------------------------------------------------------------------------------------------
# Network


def test_forward_shapes_and_dtypes():
    cfg = DetectorConfig(width=0.0625, depth=0.33, imgsz=96)
    model = YOLOPose(cfg)
    x = mx.random.uniform(shape=(2, 64, 96, 3))
    anchors = 8 * 12 + 4 * 6 + 2 * 3
    y = model(x)
    assert y.shape == (2, 4 + 2 + 63, anchors) and y.dtype == mx.float32
    assert model(x, decode=False).shape == (2, 4 * 16 + 2 + 63, anchors)
    model.set_dtype(mx.float16)
    y16 = model(x.astype(mx.float16))
    assert y16.dtype == mx.float32  # decoded in fp32 from fp16 logits: pixel coordinates keep their precision
    np.testing.assert_allclose(np.array(y16[:, :4]), np.array(y[:, :4]), rtol=0.05, atol=2.0)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(mx.zeros((1, 60, 96, 3)))


@pytest.mark.parametrize("cfg", [DetectorConfig(), TINY, DetectorConfig(width=0.25, depth=0.33, max_channels=None)])
def test_model_parameters_equal_converter_expectation(cfg):
    params = {k: v.shape for k, v in tree_flatten(YOLOPose(cfg).parameters())}
    assert params == conv.expected_shapes(cfg)
    if cfg == DetectorConfig():  # YOLOv8m-pose, nc 2, 21 keypoints: ~26.6 M parameters
        assert abs(sum(np.prod(s) for s in params.values()) - 26.61e6) < 0.01e6


def _decode_reference(raw, shapes, strides=(8, 16, 32), reg_max=16, nc=2, nk=21):
    """Anchor-by-anchor numpy decoding of ultralytics' Pose head (head.py, tal.py), float64."""
    raw = np.asarray(raw, np.float64)[0]  # (A, no)
    out = []
    a = 0
    for (h, w), s in zip(shapes, strides):
        for r in range(h):
            for c in range(w):
                v = raw[a]
                ax, ay = c + 0.5, r + 0.5
                logits = v[: 4 * reg_max].reshape(4, reg_max)
                p = np.exp(logits - logits.max(1, keepdims=True))
                d = (p / p.sum(1, keepdims=True)) @ np.arange(reg_max)
                x1, y1, x2, y2 = ax - d[0], ay - d[1], ax + d[2], ay + d[3]
                box = [(x1 + x2) / 2 * s, (y1 + y2) / 2 * s, (x2 - x1) * s, (y2 - y1) * s]
                cls = 1 / (1 + np.exp(-v[4 * reg_max : 4 * reg_max + nc]))
                k = v[4 * reg_max + nc :].reshape(nk, 3)
                kp = np.stack([(k[:, 0] * 2 + ax - 0.5) * s, (k[:, 1] * 2 + ay - 0.5) * s, 1 / (1 + np.exp(-k[:, 2]))], 1)
                out.append(np.concatenate([box, cls, kp.ravel()]))
                a += 1
    return np.stack(out, 1)[None]


def test_decode_matches_reference_and_hand_computed_case():
    model = YOLOPose(TINY)
    shapes = [(2, 3), (1, 2), (1, 1)]
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 2, (1, 9, 64 + 2 + 63)).astype(np.float32)
    # anchor 5 = level 0, row 1, col 2: centre (2.5, 1.5) cells, stride 8; one-hot DFL distances l1 t2 r3 b4
    raw[0, 5, :64] = -50.0
    for side, dist in enumerate((1, 2, 3, 4)):
        raw[0, 5, side * 16 + dist] = 50.0
    raw[0, 5, 64:66] = (0.0, np.log(3.0))  # sigmoid -> 0.5, 0.75
    raw[0, 5, 66:69] = (0.25, -0.5, 0.0)  # first keypoint
    out = np.array(model.decode(mx.array(raw), shapes))
    np.testing.assert_allclose(out, _decode_reference(raw, shapes), rtol=1e-5, atol=1e-4)
    # x1 = (2.5 - 1) * 8 = 12, y1 = (1.5 - 2) * 8 = -4, x2 = (2.5 + 3) * 8 = 44, y2 = (1.5 + 4) * 8 = 44
    np.testing.assert_allclose(out[0, :4, 5], [28, 20, 32, 48], atol=1e-4)
    np.testing.assert_allclose(out[0, 4:6, 5], [0.5, 0.75], atol=1e-6)
    # x = (0.25 * 2 + 2.5 - 0.5) * 8 = 20, y = (-0.5 * 2 + 1.5 - 0.5) * 8 = 0, visibility sigmoid(0)
    np.testing.assert_allclose(out[0, 6:9, 5], [20, 0, 0.5], atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Conversion of a real ultralytics checkpoint, and parity with ultralytics


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(FIXTURES / "detector_tiny.npz"))


def _convert_fixture():
    return conv.convert_detector(FIXTURES / "detector_tiny.pt")


@pytest.fixture(scope="module")
def converted():
    arrays, cfg = _convert_fixture()
    model = YOLOPose(cfg)
    model.load_weights([(k, mx.array(v)) for k, v in arrays.items()], strict=True)
    return model, cfg, arrays


def _images(golden):
    return [golden[f"image{i}"][..., ::-1].copy() for i in range(3)]  # ultralytics got BGR; our API takes RGB


def test_convert_reads_config_from_checkpoint(converted):
    _, cfg, arrays = converted
    assert cfg == DetectorConfig(width=0.0625, depth=0.33, max_channels=512, imgsz=128)
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert "model.0.conv.bias" in arrays and not any(".bn." in k or "dfl" in k for k in arrays)


def test_preprocess_equals_ultralytics_input(golden):
    for i, rgb in enumerate(_images(golden)):
        x = D.preprocess(rgb, 128)
        np.testing.assert_array_equal(x, golden[f"input{i}"].astype(np.float32) / np.float32(255))


def test_network_matches_ultralytics(converted, golden):
    model, _, _ = converted
    for i in range(3):
        y = np.array(model(mx.array(golden[f"input{i}"].astype(np.float32) / 255)))
        for ref in (golden[f"raw{i}"], golden[f"raw_unfused{i}"]):  # fused and unfused BN in ultralytics
            assert y.shape == ref.shape
            np.testing.assert_allclose(y[:, :4], ref[:, :4], rtol=0, atol=PX_ATOL)
            np.testing.assert_allclose(y[:, 4:6], ref[:, 4:6], rtol=0, atol=SCORE_ATOL)
            np.testing.assert_allclose(y[:, 6::3], ref[:, 6::3], rtol=0, atol=PX_ATOL)
            np.testing.assert_allclose(y[:, 7::3], ref[:, 7::3], rtol=0, atol=PX_ATOL)
            np.testing.assert_allclose(y[:, 8::3], ref[:, 8::3], rtol=0, atol=SCORE_ATOL)


def _masked(kpts):
    """ultralytics' Results zero x, y of keypoints whose visibility < 0.5; Detections keeps them."""
    k = kpts.copy()
    k[..., :2][k[..., 2] < 0.5] = 0
    return k


def _settings(golden):
    return [(float(c), float(i), int(m)) for c, i, m in golden["settings"]]


def test_postprocess_equals_ultralytics(golden):
    """From ultralytics' own head output, NMS + rescaling reproduce its results exactly."""
    for i, rgb in enumerate(_images(golden)):
        hw = golden[f"input{i}"].shape[1:3]
        for j, (c, iou, md) in enumerate(_settings(golden)):
            (d,) = D.postprocess(golden[f"raw{i}"], hw, rgb.shape[:2], conf=c, iou=iou, max_det=md)
            assert len(d) == len(golden[f"boxes{i}_{j}"]) > 0
            np.testing.assert_array_equal(d.boxes, golden[f"boxes{i}_{j}"])
            np.testing.assert_array_equal(d.scores, golden[f"scores{i}_{j}"])
            np.testing.assert_array_equal(d.classes, golden[f"classes{i}_{j}"])
            np.testing.assert_allclose(_masked(d.keypoints), golden[f"kpts{i}_{j}"], rtol=0, atol=1e-4)
    assert {0, 1} <= set(np.concatenate([golden[f"classes{i}_0"] for i in range(3)]).tolist())
    assert max(len(golden[f"boxes{i}_0"]) for i in range(3)) < (golden["raw0"][0, 4:6].max(0) > 0.3).sum()  # NMS bit


def test_detect_end_to_end_matches_ultralytics(converted, golden):
    model, cfg, _ = converted
    seen = []

    def model_fn(batch):
        seen.append((batch.shape, batch.dtype))
        return np.array(model(mx.array(batch)))

    for i, rgb in enumerate(_images(golden)):
        for j, (c, iou, md) in enumerate(_settings(golden)):
            d = D.detect(model_fn, rgb, imgsz=cfg.imgsz, conf=c, iou=iou, max_det=md)
            assert len(d) == len(golden[f"boxes{i}_{j}"])
            np.testing.assert_array_equal(d.boxes, golden[f"boxes{i}_{j}"])
            np.testing.assert_array_equal(d.classes, golden[f"classes{i}_{j}"])
            np.testing.assert_allclose(d.scores, golden[f"scores{i}_{j}"], rtol=0, atol=SCORE_ATOL)
            np.testing.assert_allclose(_masked(d.keypoints), golden[f"kpts{i}_{j}"], rtol=0, atol=PX_ATOL)
    assert seen[0] == ((1, 128, 96, 3), np.float32)


def test_uint8_input_is_the_float_input(converted, golden):
    """The pipeline sends the letterboxed uint8 pixels (a quarter of the bytes) and the network divides by
    255 in float32 as the host does: the same numbers."""
    model, cfg, _ = converted
    rgb = _images(golden)[0]
    x8 = D.preprocess(rgb, cfg.imgsz, scale=False)
    assert x8.dtype == np.uint8 and x8.shape == golden["input0"].shape
    x32 = D.preprocess(rgb, cfg.imgsz)
    np.testing.assert_array_equal(x32, x8.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(np.array(model(mx.array(x8))), np.array(model(mx.array(x32))))
    d8 = D.detect(lambda b: np.array(model(to_device(b))), rgb, imgsz=cfg.imgsz, uint8_input=True)
    d32 = D.detect(lambda b: np.array(model(mx.array(b))), rgb, imgsz=cfg.imgsz)
    np.testing.assert_array_equal(d8.boxes, d32.boxes)
    np.testing.assert_array_equal(d8.keypoints, d32.keypoints)


# ------------------------------------------------------------------------------------------------
# Conversion checks on synthetic state dicts


def _torch_state(cfg: DetectorConfig, rng, fused=False) -> dict[str, np.ndarray]:
    """A torch-layout ultralytics state dict for cfg: Conv = conv.weight + bn.* (or conv.bias if fused)."""
    state = {}
    for k, shape in conv.expected_shapes(cfg).items():
        if k.endswith(".weight"):
            o, kh, kw, i = shape
            state[k] = rng.normal(0, 0.1, (o, i, kh, kw)).astype(np.float16)
        elif k.endswith("conv.bias") and not fused:
            bn = k[: -len("conv.bias")] + "bn"
            n = shape[0]
            state[f"{bn}.weight"] = rng.uniform(0.5, 1.5, n).astype(np.float16)
            state[f"{bn}.bias"] = rng.normal(0, 0.1, n).astype(np.float16)
            state[f"{bn}.running_mean"] = rng.normal(0, 0.1, n).astype(np.float16)
            state[f"{bn}.running_var"] = rng.uniform(0.5, 2, n).astype(np.float16)
            state[f"{bn}.num_batches_tracked"] = np.array(10, np.int64)
        else:
            state[k] = rng.normal(0, 0.1, shape).astype(np.float16)
    state["model.22.dfl.conv.weight"] = np.arange(16, dtype=np.float16).reshape(1, 16, 1, 1)
    return state


def test_fold_bn_equals_conv_then_batchnorm():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 3, 1, 1))
    g, b, m, v = rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4)
    x = rng.normal(size=(10, 3))
    y = x @ w[:, :, 0, 0].T
    ref = (y - m) / np.sqrt(v + 1e-3) * g + b
    wf, bf = conv.fold_bn(w, g, b, m, v, 1e-3)
    np.testing.assert_allclose(x @ wf[:, :, 0, 0].T + bf, ref, rtol=1e-5, atol=1e-5)


def test_convert_state_unfused_and_fused_agree():
    rng = np.random.default_rng(2)
    state = _torch_state(TINY, rng)
    out = conv.convert_detector_state(state, TINY)
    assert {k: v.shape for k, v in out.items()} == conv.expected_shapes(TINY)
    w, b = conv.fold_bn(state["model.0.conv.weight"], *(state[f"model.0.bn.{k}"] for k in
                        ("weight", "bias", "running_mean", "running_var")), 1e-3)
    np.testing.assert_array_equal(out["model.0.conv.weight"], w.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(out["model.0.conv.bias"], b)
    # an already fused checkpoint (conv.bias, no bn) passes through
    fused = {k: v for k, v in state.items() if ".bn." not in k}
    for k in out:
        if k.endswith("conv.bias"):
            fused[k] = out[k]
            fused[k.replace(".bias", ".weight")] = out[k.replace(".bias", ".weight")].transpose(0, 3, 1, 2)
    out2 = conv.convert_detector_state(fused, TINY)
    for k in out:
        np.testing.assert_allclose(out2[k], out[k], rtol=0, atol=0)
    # per-BN eps is honoured
    out3 = conv.convert_detector_state(state, TINY, bn_eps={"model.0.bn": 1e-5})
    assert not np.array_equal(out3["model.0.conv.bias"], out["model.0.conv.bias"])


def test_convert_state_names_missing_misshaped_and_unknown_keys():
    rng = np.random.default_rng(3)
    state = _torch_state(TINY, rng)
    bad = {k: v for k, v in state.items() if k != "model.22.cv4.1.2.weight"}
    with pytest.raises(ValueError, match=r"missing keys.*model\.22\.cv4\.1\.2\.weight"):
        conv.convert_detector_state(bad, TINY)
    bad = {k: v for k, v in state.items() if k != "model.5.bn.running_var"}
    with pytest.raises(ValueError, match=r"model\.5\.bn\.running_var"):
        conv.convert_detector_state(bad, TINY)
    bad = dict(state, **{"model.22.cv3.0.2.weight": np.zeros((3, 16, 1, 1), np.float16),
                         "model.22.cv3.0.2.bias": np.zeros(3, np.float16)})
    with pytest.raises(ValueError, match=r"mis-shaped.*model\.22\.cv3\.0\.2\.weight"):
        conv.convert_detector_state(bad, TINY)  # a 3-class head for a 2-class config
    with pytest.raises(ValueError, match=r"unexpected keys.*model\.23\.conv\.weight"):
        conv.convert_detector_state(dict(state, **{"model.23.conv.weight": state["model.0.conv.weight"]}), TINY)
    bad = dict(state, **{"model.22.dfl.conv.weight": np.ones((1, 16, 1, 1), np.float16)})
    with pytest.raises(ValueError, match="DFL"):
        conv.convert_detector_state(bad, TINY)


def _yaml(**over):
    layers = [[f, n, m, []] for f, n, m in conv.YOLOV8_POSE_LAYERS]
    y = {"nc": 2, "kpt_shape": [21, 3], "scales": {"n": [0.33, 0.25, 1024], "m": [0.67, 0.75, 768]},
         "scale": "m", "backbone": layers[:10], "head": layers[10:]}
    y.update(over)
    return y


def test_config_from_checkpoint_fields_and_errors():
    model = SimpleNamespace(yaml=_yaml(), names={0: "left", 1: "right"}, kpt_shape=[21, 3])
    cfg = conv.config_from_checkpoint({"train_args": {"imgsz": 640}}, model)
    assert cfg == DetectorConfig()
    model.yaml = _yaml(scale=None)  # ultralytics falls back to the first scale
    assert conv.config_from_checkpoint({"train_args": {"imgsz": 320}}, model) == DetectorConfig(
        width=0.25, depth=0.33, max_channels=1024, imgsz=320)
    model.yaml = _yaml(scales=None, depth_multiple=0.33, width_multiple=0.5)
    assert conv.config_from_checkpoint({}, model).max_channels is None
    layers = _yaml()
    layers["head"][2][2] = "C3"
    model.yaml = layers
    with pytest.raises(ValueError, match="layer 12.*only YOLOv8-pose"):
        conv.config_from_checkpoint({}, model)
    model.yaml = _yaml(activation="nn.ReLU()")
    with pytest.raises(ValueError, match="activation"):
        conv.config_from_checkpoint({}, model)


def test_convert_detector_rejects_non_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        conv.convert_detector(tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        conv.convert_detector(bad)


# ------------------------------------------------------------------------------------------------
# Letterbox and rescaling


@pytest.mark.parametrize(
    "hw, auto, out_hw, pad",
    [
        ((150, 100), True, (128, 96), (5, 0)),  # r = 128/150, resized 85 wide, 11 px pad split 5 / 6
        ((150, 100), False, (128, 128), (21, 0)),  # 43 px pad split 21 / 22
        ((37, 53), True, (96, 128), (0, 3)),  # upscaled 2.415x to 89 high, 7 px pad split 3 / 4
        ((64, 128), True, (64, 128), (0, 0)),  # nothing to do
        ((720, 1280), True, (384, 640), (0, 12)),  # a 16:9 frame at imgsz 640
    ],
)
def test_letterbox_geometry(hw, auto, out_hw, pad):
    img = np.full((*hw, 3), 7, np.uint8)
    size = 640 if hw == (720, 1280) else 128
    out, r, (left, top) = D.letterbox(img, size, auto=auto)
    assert out.shape == (*out_hw, 3) and out.dtype == np.uint8
    assert (left, top) == pad
    assert r == pytest.approx(min(size / hw[0], size / hw[1]))
    uh, uw = round(hw[0] * r), round(hw[1] * r)
    assert (out[top : top + uh, left : left + uw] == 7).all()
    border = np.ones(out_hw, bool)
    border[top : top + uh, left : left + uw] = False
    assert (out[border] == 114).all()


def test_letterbox_content_is_cv2_linear_resize():
    import cv2

    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (150, 100, 3), dtype=np.uint8)
    out, r, (left, top) = D.letterbox(img, 128)
    np.testing.assert_array_equal(out[:, left : left + 85], cv2.resize(img, (85, 128), interpolation=cv2.INTER_LINEAR))


def test_scale_boxes_and_coords_back_to_original():
    # 200 x 100 (h, w) image at 128, auto: r = 0.64, resized 64 wide, pad 0 -> letterbox (128, 64)
    img1, img0 = (128, 64), (200, 100)
    boxes = np.array([[10.0, 20.0, 30.0, 40.0], [-5.0, -5.0, 70.0, 140.0]], np.float32)
    np.testing.assert_allclose(D.scale_boxes(img1, boxes, img0), [[15.625, 31.25, 46.875, 62.5], [0, 0, 100, 200]])
    # letterbox (128, 96) of 150 x 100 has an integer pad of 5 for boxes, fractional 5.333 for keypoints
    img1, img0 = (128, 96), (150, 100)
    gain = 128 / 150
    b = D.scale_boxes(img1, np.array([[15.0, 0.0, 25.0, 10.0]], np.float32), img0)
    np.testing.assert_allclose(b, [[10 / gain, 0, 20 / gain, 10 / gain]], rtol=1e-6)
    k = D.scale_coords(img1, np.array([[[15.0, 10.0, 0.7], [200.0, -3.0, 0.2]]], np.float32), img0)
    pad = (96 - 100 * gain) / 2
    np.testing.assert_allclose(k, [[[(15 - pad) / gain, 10 / gain, 0.7], [100, 0, 0.2]]], rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# NMS and thresholds


def _raw(boxes_xyxy, scores, kpts=None):
    """Decoded head output (1, 4 + 2 + 63, N) from xyxy boxes and (N, 2) class scores."""
    b = np.asarray(boxes_xyxy, np.float32)
    xywh = np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1)
    k = np.zeros((len(b), 63), np.float32) if kpts is None else np.asarray(kpts, np.float32).reshape(len(b), 63)
    return np.concatenate([xywh, np.asarray(scores, np.float32), k], 1).T[None]


def test_nms_is_class_aware():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10]]  # IoU 0.818
    (d,) = D.postprocess(_raw(boxes, [[0.9, 0.1], [0.1, 0.8]]), (64, 64), (64, 64))
    assert d.classes.tolist() == [0, 1] and d.scores.tolist() == pytest.approx([0.9, 0.8])
    (d,) = D.postprocess(_raw(boxes, [[0.1, 0.9], [0.1, 0.8]]), (64, 64), (64, 64))
    assert d.classes.tolist() == [1] and d.scores.tolist() == pytest.approx([0.9])
    out = D.non_max_suppression(_raw(boxes, [[0.9, 0.1], [0.1, 0.8]]), 0.3, 0.7, nc=2, agnostic=True)
    assert len(out[0]) == 1


def test_nms_threshold_is_strict_and_order_is_by_score():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]]  # IoU(0, 1) = 0.5 exactly
    scores = [[0.0, 0.6], [0.0, 0.9], [0.0, 0.7]]
    (d,) = D.postprocess(_raw(boxes, scores), (64, 64), (64, 64), iou=0.5)
    assert d.boxes.tolist() == [[0, 0, 10, 5], [20, 20, 30, 30], [0, 0, 10, 10]]
    (d,) = D.postprocess(_raw(boxes, scores), (64, 64), (64, 64), iou=0.49)
    assert d.boxes.tolist() == [[0, 0, 10, 5], [20, 20, 30, 30]]


def test_conf_threshold_best_class_and_class_filter():
    boxes = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [0, 20, 10, 30]]
    scores = [[0.5, 0.2], [0.4, 0.9], [0.29, 0.3], [0.31, 0.0]]  # 0.5 == conf: dropped (strict >)
    (d,) = D.postprocess(_raw(boxes, scores), (64, 64), (64, 64), conf=0.5)
    assert d.classes.tolist() == [1] and d.scores.tolist() == pytest.approx([0.9])
    (d,) = D.postprocess(_raw(boxes, scores), (64, 64), (64, 64), conf=0.3)
    assert d.scores.tolist() == pytest.approx([0.9, 0.5, 0.31])  # 0.3 is not > 0.3
    (d,) = D.postprocess(_raw(boxes, scores), (64, 64), (64, 64), conf=0.3, classes=[0])
    assert d.classes.tolist() == [0, 0]


def test_max_det_keeps_the_best():
    n = 40
    boxes = [[i * 12, 0, i * 12 + 10, 10] for i in range(n)]
    scores = [[0.0, 0.31 + 0.01 * i] for i in range(n)]
    (d,) = D.postprocess(_raw(boxes, scores), (64, 512), (64, 512), max_det=5)
    assert len(d) == 5 and np.all(np.diff(d.scores) < 0)
    assert d.scores[0] == pytest.approx(0.31 + 0.01 * 39) and d.boxes[0, 0] == min(39 * 12, 512)


def test_nms_early_stop_equals_full_greedy_pass():
    rng = np.random.default_rng(5)
    xy, wh = rng.uniform(0, 200, (500, 2)), rng.uniform(5, 60, (500, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 500).astype(np.float32)
    full = D.nms(boxes, scores, 0.5)
    assert 30 < len(full) < 500
    np.testing.assert_array_equal(D.nms(boxes, scores, 0.5, max_keep=30), full[:30])
    assert len(D.nms(boxes, scores, 0.5, max_keep=0)) == 0


def test_max_nms_caps_the_candidates_by_score():
    boxes = [[i * 12, 0, i * 12 + 10, 10] for i in range(5)]
    scores = [[0.4, 0.0], [0.9, 0.0], [0.5, 0.0], [0.8, 0.0], [0.6, 0.0]]
    (out,) = D.non_max_suppression(_raw(boxes, scores), 0.3, 0.7, nc=2, max_nms=2)
    assert out[:, 4].tolist() == pytest.approx([0.9, 0.8])


def test_empty_and_bad_inputs():
    (d,) = D.postprocess(_raw([[0, 0, 1, 1]], [[0.1, 0.1]]), (64, 64), (64, 64))
    assert d.boxes.shape == (0, 4) and d.scores.shape == (0,) and d.classes.shape == (0,)
    assert d.keypoints.shape == (0, 21, 3)
    with pytest.raises(ValueError, match="raw detector output"):
        D.postprocess(np.zeros((1, 10, 5), np.float32), (64, 64), (64, 64))
    with pytest.raises(ValueError, match="conf"):
        D.postprocess(_raw([[0, 0, 1, 1]], [[0.1, 0.1]]), (64, 64), (64, 64), conf=1.5)
    with pytest.raises(ValueError, match="RGB uint8"):
        D.detect(lambda x: x, np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="RGB uint8"):
        D.detect(lambda x: x, np.zeros((10, 10), np.uint8))


def test_detect_feeds_rgb_and_maps_back_to_the_image():
    """A fake network that 'detects' the letterboxed image region; the box must come back as the image."""
    img = np.zeros((200, 100, 3), np.uint8)
    img[..., 0] = 255  # pure red, RGB
    seen = {}

    def model_fn(x):
        seen["x"] = x
        _, h, w, _ = x.shape
        red = np.argwhere(x[0, :, :, 0] == 1.0)
        (y0, x0), (y1, x1) = red.min(0), red.max(0) + 1
        kp = np.tile([x0 + 0.5, y0 + 0.5, 0.9], 21)
        return _raw([[x0, y0, x1, y1]], [[0.2, 0.8]], kp)

    d = D.detect(model_fn, img, imgsz=128)
    x = seen["x"]
    assert x.shape == (1, 128, 64, 3) and x.dtype == np.float32
    assert x[0, 0, 0].tolist() == [1.0, 0.0, 0.0]  # red channel first: the network sees RGB
    np.testing.assert_array_equal(d.boxes, [[0, 0, 100, 200]])
    assert d.classes.tolist() == [1] and d.is_right.tolist() == [True]
    np.testing.assert_allclose(d.keypoints[0, 0], [0.5 / 0.64, 0.5 / 0.64, 0.9], rtol=1e-5)
