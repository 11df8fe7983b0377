"""Calibration crops for GPTQ: hands cut from photos as the pipeline cuts them, or crop arrays; clear errors."""

import cv2
import numpy as np
import pytest

from mlx_hands.pipeline import preprocess
from mlx_hands.pipeline.calibration import calibration_crops


def _one_hand_detector(seen):
    """A stand-in detector: one right hand in the middle of whatever letterboxed image it gets."""

    def fn(batch):
        seen.append((batch.dtype, batch.shape))
        h, w = batch.shape[1:3]
        raw = np.zeros((1, 4 + 2 + 63, 1), np.float32)
        raw[0, :4, 0] = (w / 2, h / 2, w / 4, h / 4)  # xywh in input pixels
        raw[0, 5, 0] = 0.9  # class 1 = right
        return raw

    return fn


def test_photos_are_cropped_like_the_pipeline(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (240, 320, 3), np.uint8)
    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "a.png"), img[:, :, ::-1])  # RGB image saved as BGR
    cv2.imwrite(str(tmp_path / "photos" / "b.png"), img[::-1, :, ::-1])
    seen = []
    crops = calibration_crops([tmp_path / "photos"], _one_hand_detector(seen), imgsz=320)
    assert crops.shape == (2, 256, 256, 3) and crops.dtype == np.float32
    assert seen[0][0] == np.uint8
    box = np.array([[120, 90, 200, 150]], np.float32)  # the planted box, back in image pixels
    expected, _, _ = preprocess.crop_hands(img, box, np.array([True]))
    np.testing.assert_allclose(crops[0], expected[0], atol=1e-4)
    # arrays and photos together, capped at max_crops
    np.save(tmp_path / "c.npy", np.zeros((3, 256, 256, 3), np.uint8))
    both = calibration_crops([tmp_path / "c.npy", tmp_path / "photos"], _one_hand_detector([]), imgsz=320,
                             max_crops=4)
    assert len(both) == 4 and not both[:3].any()


def test_npz_crops(tmp_path):
    np.savez(tmp_path / "c.npz", crops=np.full((2, 256, 256, 3), 7, np.uint8), other=np.zeros(3))
    np.testing.assert_array_equal(calibration_crops([tmp_path / "c.npz"]), np.full((2, 256, 256, 3), 7.0))


def test_errors(tmp_path):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="no hands found"):
        calibration_crops([blank], lambda b: np.zeros((1, 69, 1), np.float32), imgsz=64)
    with pytest.raises(ValueError, match="needs the hand detector"):
        calibration_crops([blank])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images in this folder"):
        calibration_crops([tmp_path / "empty"], _one_hand_detector([]))
    with pytest.raises(FileNotFoundError, match="no such file"):
        calibration_crops([tmp_path / "missing.jpg"], _one_hand_detector([]))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="not a readable .npy/.npz"):
        calibration_crops([tmp_path / "junk.npy"])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="truncated or damaged JPEG"):
        calibration_crops([bad], _one_hand_detector([]))


def test_cli_calibrates_on_photos_with_the_folders_detector(tmp_path, capsys):
    """End to end: a converted folder with a (random) detector, a folder of photos -> a GPTQ-quantized copy."""
    from mlx_hands.cli import main
    from mlx_hands.weights import load_config, load_wilor
    from synth import write_tiny_model

    src = write_tiny_model(tmp_path / "src")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(photos / f"{i}.jpg"), rng.integers(0, 256, (120, 160, 3), np.uint8))
    # a random detector scores every anchor near 0.5, so it finds "hands" at the default threshold
    assert main(["quantize", str(src), "-o", str(tmp_path / "q4"), "--calibrate", str(photos),
                 "--calibrate-max", "12"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load_config(tmp_path / "q4")["quantization"]["bits"] == 4
    out = load_wilor(tmp_path / "q4")(rng.integers(0, 256, (1, 256, 256, 3), np.uint8))
    assert np.isfinite(np.array(out.vertices)).all()
