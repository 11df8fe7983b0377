"""Bad input at the edges gets one clear error, never a crash, a traceback or a silent wrong answer (issue 12):
non-finite inputs and weights, damaged checkpoints and images, unusable output folders, oversized inputs,
config.json mistakes, a stale conversion cache, the slow CPU BLAS, numpy crops into the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import mlx.core as mx
import numpy as np
import pytest
from conftest import use_tiny_default_config

import mlx_hands
from mlx_hands.blas import find_openblas
from mlx_hands.cli import main
from mlx_hands.hub import WiLoR
from mlx_hands.pipeline.images import MAX_PIXELS, to_rgb_uint8
from mlx_hands.pipeline.runner import HandPosePipeline
from synth import write_mano_pkl, write_tiny_model, write_torch_checkpoint
from test_models import golden, load_golden_model  # noqa: F401  (fixture)

ROOT = Path(mlx_hands.__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`mlx-hands ARGS` in a real process."""
    return subprocess.run([sys.executable, "-m", "mlx_hands", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**ENV, **(env or {})})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture()
def photo(tmp_path):
    p = tmp_path / "photo.jpg"
    cv2.imwrite(str(p), np.random.default_rng(0).integers(0, 256, (120, 160, 3), np.uint8))
    return p


# ---------------------------------------------------------------- non-finite values


def test_nan_crops_are_refused_in_one_line(golden):  # noqa: F811
    model = load_golden_model(golden)
    crops = np.asarray(golden["crops"], np.float32).copy()
    crops[0, 100, 100, 1] = np.nan
    for c in (crops, mx.array(crops)):
        with pytest.raises(ValueError, match="crops contain NaN or infinite values"):
            model(c)


def test_nan_sampling_coordinates_read_nothing_out_of_bounds():
    """The first session's segfault: a NaN coordinate cast to an integer index. In its own process, so that
    a crash fails this test instead of ending the run."""
    script = """
import mlx.core as mx, numpy as np
from mlx_hands.models.refinenet import sample_points
feat = mx.random.normal((2, 16, 12, 8))
uv = mx.array(np.array([[[np.nan, 3.0], [np.inf, -np.inf], [1e30, -1e30], [2.5, 3.5]]] * 2, np.float32))
out = np.array(sample_points(feat, uv))
assert np.isfinite(out).all() and (out[:, :3] == 0).all(), out
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr)


def test_damaged_weights_never_pass_silently(golden, tmp_path, photo):  # noqa: F811
    """A converted folder whose weights blow up gives one error naming the problem, not NaN hands."""
    d = write_tiny_model(tmp_path / "m")
    pipe = HandPosePipeline.from_pretrained(d, conf=0.0, max_det=1)
    pipe.model.backbone.blocks[0].mlp.fc1.weight = pipe.model.backbone.blocks[0].mlp.fc1.weight * 1e38
    with pytest.raises(ValueError, match="NaN or infinite values .* weights are damaged"):
        pipe(str(photo))


# ---------------------------------------------------------------- damaged checkpoints


@pytest.fixture()
def originals(tmp_path, golden):  # noqa: F811
    pytest.importorskip("torch")  # only to write the real-format checkpoint
    folder = tmp_path / "originals"
    folder.mkdir()
    write_torch_checkpoint(folder / "wilor_final.ckpt", dict(golden["state"]))
    np.savez(folder / "mano_mean_params.npz", **golden["mean"])
    write_mano_pkl(folder / "MANO_RIGHT.pkl", golden["mano"])
    return folder


def test_a_checkpoint_overwritten_in_the_middle_is_refused(originals, tmp_path, monkeypatch, golden):  # noqa: F811
    ckpt = originals / "wilor_final.ckpt"
    data = bytearray(ckpt.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = os.urandom(4096)
    ckpt.write_bytes(bytes(data))
    use_tiny_default_config(monkeypatch, golden["config"])
    assert main(["convert", str(originals), "-o", str(tmp_path / "out")]) == 2
    r = cli("convert", originals, "-o", tmp_path / "out")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and ("checksum" in line or "damaged" in line), line
    assert not (tmp_path / "out").exists()


def test_non_finite_weights_are_refused_at_conversion(originals, tmp_path, golden):  # noqa: F811
    from mlx_hands.convert import convert

    state = dict(golden["state"])
    key = "backbone.blocks.1.attn.qkv.weight"
    state[key] = np.array(state[key], copy=True)
    state[key][0, 0] = np.inf
    write_torch_checkpoint(originals / "wilor_final.ckpt", state)
    with pytest.raises(ValueError, match=f"NaN or infinite values .*wilor.{key}"):
        convert(originals, tmp_path / "out", config=golden["config"])


# ---------------------------------------------------------------- damaged images, output folders, sizes


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_images_are_reported_once_and_the_others_go_on(tiny, tmp_path, photo, suffix):
    good = tmp_path / "photos"
    good.mkdir()
    img = np.random.default_rng(1).integers(0, 256, (120, 160, 3), np.uint8)
    cv2.imwrite(str(good / f"a{suffix}"), img)
    data = (good / f"a{suffix}").read_bytes()
    (good / f"b{suffix}").write_bytes(data[: len(data) * 2 // 3])
    r = cli("predict", good, "--out", tmp_path / "out", "--model", tiny)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"b{suffix}" in errors[0] and "truncated" in errors[0], r.stderr
    assert errors[0].count(f"b{suffix}") == 1  # the file named once
    assert "Premature end" not in r.stderr and "libpng" not in r.stderr  # the decoder's own noise is silent
    assert (tmp_path / "out" / "a.json").is_file() and not (tmp_path / "out" / "b.json").exists()


@pytest.mark.parametrize("make_out, match", [
    (lambda d: (d / "file.txt").write_text("x") and d / "file.txt", "it is a file"),
    (lambda d: (d / "file2.txt").write_text("x") and d / "file2.txt" / "sub", "cannot create output folder"),
])
def test_an_unusable_output_place_is_refused_before_any_work(tiny, tmp_path, photo, make_out, match):
    out = make_out(tmp_path)
    r = cli("predict", photo, "--out", out, "--model", tmp_path / "no-such-model")
    # refused for the output, before the model (which does not even exist) is looked at
    assert r.returncode == 2 and match in r.stderr and str(out) in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_failed_run_leaves_no_empty_folders(tmp_path, photo):
    out = tmp_path / "a" / "b" / "out"
    r = cli("predict", photo, "--out", out, "--model", tmp_path / "no-such-model")
    assert r.returncode == 2 and "no-such-model" in r.stderr
    assert not (tmp_path / "a").exists()


def test_oversized_boxes_and_images_are_refused(tiny):
    pipe = HandPosePipeline.from_pretrained(tiny)
    img = np.zeros((120, 160, 3), np.uint8)
    with pytest.raises(ValueError, match="at most 4x the 160x120 image"):
        pipe.predict_with_boxes(img, [[0, 0, 1e9, 1e9]], [1])
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))  # no memory behind it
    with pytest.raises(ValueError, match="more than this pipeline takes"):
        to_rgb_uint8(huge)
    assert 20000 * 20000 > MAX_PIXELS


# ---------------------------------------------------------------- config.json, the cache, BLAS, numpy crops


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["wilor"]["vit"].update(dim="1280"), "wilor.vit: dim must be an integer, got '1280'"),
    (lambda c: c["wilor"]["vit"].update(num_heads=7), "dim 64 is not divisible by num_heads 7"),
    (lambda c: c.update(dtype="float8"), "dtype must be one of float32, float16, bfloat16, got 'float8'"),
    (lambda c: c["wilor"]["vit"].update(depth=-2), "depth must be positive"),
    (lambda c: c["wilor"]["vit"].update(image_size=[256]), "image_size must be \\[H, W\\]"),
    (lambda c: c["wilor"].update(focal_length=None), "focal_length must be a finite number"),
    (lambda c: c["detector"].update(imgsz=100), "imgsz must be a multiple of 32"),
    (lambda c: c["detector"].update(kpt_shape=[21, 5]), "kpt_shape must be"),
    (lambda c: c["wilor"]["refine_net"].update(feat_dim=32), "refine_net.feat_dim 32 must equal vit.dim 64"),
    (lambda c: c.update(wilor=[]), "wilor must be an object"),
    (lambda c: c.update(extra=1), "unknown keys \\['extra'\\]"),
    (lambda c: c["quantization"].update(bits=3) if "quantization" in c else c.update(quantization={"bits": 3}),
     "quantization bits must be one of"),
])
def test_config_mistakes_are_one_line_at_load(tiny, tmp_path, photo, edit, match):
    import shutil

    d = tmp_path / "model"
    shutil.copytree(tiny, d)
    config = json.loads((d / "config.json").read_text())
    edit(config)
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        HandPosePipeline.from_pretrained(d)
    r = cli("predict", photo, "--out", tmp_path / "out", "--model", d)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "config.json" in r.stderr, r.stderr


def test_the_cache_follows_every_source_file(originals, tmp_path, monkeypatch, golden):  # noqa: F811
    """A folder converted before MANO_RIGHT.pkl was added converts again once it is there."""
    use_tiny_default_config(monkeypatch, golden["config"])
    mano = originals / "MANO_RIGHT.pkl"
    hidden = mano.rename(tmp_path / "MANO_RIGHT.pkl")
    with pytest.raises(FileNotFoundError, match="no MANO model"):
        WiLoR.from_pretrained(originals)
    hidden.rename(mano)
    model = WiLoR.from_pretrained(originals)  # no stale cache in the way
    out = model(np.asarray(golden["crops"]))
    np.testing.assert_allclose(np.array(out.vertices), golden["out"]["pred_vertices"], atol=1e-5)


def test_numpy_crops_go_in_like_mlx_ones(golden):  # noqa: F811
    model = load_golden_model(golden)
    crops = np.asarray(golden["crops"])
    a, b = model(crops), model(mx.array(crops))
    np.testing.assert_array_equal(np.array(a.vertices), np.array(b.vertices))
    for bad, match in ((crops.astype(np.int64), "uint8 or float32"), (crops[0], "must have shape"),
                       ([[1, 2, 3]], "numpy or MLX array")):
        with pytest.raises(ValueError, match=match):
            model(bad)


@pytest.mark.skipif(not sys.platform.startswith("linux") or find_openblas() is None,
                    reason="needs Linux and a system OpenBLAS (the CI machine installs libopenblas0-pthread)")
def test_library_users_get_the_fast_cpu_blas_and_a_warning_otherwise(tiny):
    fast = subprocess.run([sys.executable, "-c", "import mlx_hands; from mlx_hands.blas import cpu_gemm_gflops; "
                           "print(cpu_gemm_gflops())"], capture_output=True, text=True, env=ENV, timeout=120)
    assert fast.returncode == 0 and float(fast.stdout) > 20, fast.stdout + fast.stderr
    slow = subprocess.run([sys.executable, "-c", "import mlx.core, logging; logging.basicConfig(); import mlx_hands; "
                           f"mlx_hands.load({str(tiny)!r})"], capture_output=True, text=True, env=ENV, timeout=120)
    assert slow.returncode == 0 and "slow reference BLAS" in slow.stderr, slow.stderr


@pytest.mark.parametrize("verb, module", [("annotate", "pyarrow"), ("serve", "starlette")])
def test_a_verb_without_its_extra_names_the_pip_command(tmp_path, verb, module):
    """Without an optional dependency the verb still appears, and using it prints the extra that installs it."""
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from mlx_hands.cli import main\n"
            f"sys.exit(main([{verb!r}, 'x', '--out', {str(tmp_path / 'o')!r}] if {verb!r} == 'annotate' else [{verb!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f'mlx-hands {verb}: error: {module} is not installed: pip install "mlx-hands[{verb}]"']
