"""The GPU kernel cache (mlx_hands.kernel_cache) on the CPU: its home, the warm markers, the background compile
process gating a compiled forward, and `mlx-hands warmup`. (Where NVRTC really runs, only the device machine
checks: BENCHMARKS.md, benchmarks/cold_start.py.)"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import time

import mlx.core as mx
import numpy as np
import pytest

from mlx_hands import kernel_cache, settings, synthetic, warm_job
from mlx_hands.pipeline import preprocess
from mlx_hands.cli import main
from mlx_hands.models import nvrtc


def test_kernel_cache_lives_with_the_mlx_hands_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("MLX_PTX_CACHE_DIR", raising=False)
    monkeypatch.setenv("MLX_HANDS_CACHE", str(tmp_path / "c"))
    expected = tmp_path / "c" / "kernels" / importlib.metadata.version("mlx")
    assert settings.kernel_cache_dir() == expected
    assert kernel_cache.use_kernel_cache() == expected
    assert expected.is_dir()
    import os

    assert os.environ["MLX_PTX_CACHE_DIR"] == str(expected)  # MLX reads it at its first JIT compile
    # a user's own MLX_PTX_CACHE_DIR wins, and the loader leaves it alone
    monkeypatch.setenv("MLX_PTX_CACHE_DIR", str(tmp_path / "mine"))
    assert kernel_cache.use_kernel_cache() == tmp_path / "mine"
    assert os.environ["MLX_PTX_CACHE_DIR"] == str(tmp_path / "mine")


def test_warmup_mode_setting(monkeypatch):
    monkeypatch.delenv("MLX_HANDS_WARMUP", raising=False)
    assert settings.warmup_mode() == "background"
    monkeypatch.setenv("MLX_HANDS_WARMUP", "foreground")
    assert settings.warmup_mode() == "foreground"
    monkeypatch.setenv("MLX_HANDS_WARMUP", "later")
    with pytest.raises(ValueError, match="MLX_HANDS_WARMUP"):
        settings.warmup_mode()


def test_split64_round_trips_through_int32_halves():
    for value in (0, 1, 2**31 - 1, 2**31, 2**32 + 5, 0x7F12_3456_89AB_CDEF):
        lo, hi = nvrtc.split64(value)
        assert -(2**31) <= lo < 2**31 and -(2**31) <= hi < 2**31
        assert (lo & 0xFFFFFFFF) | ((hi & 0xFFFFFFFF) << 32) == value


def test_signature_follows_what_the_kernels_depend_on():
    model = synthetic.random_model(synthetic.TINY, "float32")
    spec = kernel_cache.model_spec("wilor", model)
    assert kernel_cache.signature(spec) == kernel_cache.signature(kernel_cache.model_spec("wilor", model))
    model.set_dtype(mx.float16)
    assert kernel_cache.signature(kernel_cache.model_spec("wilor", model)) != kernel_cache.signature(spec)
    det = synthetic.random_detector("float32", synthetic.TINY_DETECTOR)
    assert kernel_cache.model_spec("detector", det)["dtype"] == "float32"


def test_background_compile_gates_the_compiled_forward(tmp_path):
    """Cold: the gate starts the background process and the model runs uncompiled; once the process has marked
    the kernels warm, the same model runs compiled, with the same results."""
    model = synthetic.random_model(synthetic.TINY, "float32")
    model.compile = True
    gate = kernel_cache.Warmup(folder=tmp_path, mode="background")
    gate.attach("wilor", model)
    crops = synthetic.make_crops(2, 3)
    eager = model(crops)
    assert gate.process is not None and not model._compiled._fns  # ran without mx.compile
    logs = kernel_cache.warm_dir(tmp_path)
    assert gate.process.wait(timeout=600) == 0, [p.read_text() for p in logs.glob("*.log")]
    sig = kernel_cache.signature(kernel_cache.model_spec("wilor", model))
    assert kernel_cache.is_warm(tmp_path, sig)
    compiled = model(crops)
    assert model._compiled._fns  # now compiled
    for name in ("vertices", "keypoints_3d", "cam"):
        np.testing.assert_allclose(np.array(getattr(compiled, name)), np.array(getattr(eager, name)),
                                   rtol=1e-4, atol=1e-5)
    # a new process with the kernels in the cache goes straight to the compiled forward
    again = kernel_cache.Warmup(folder=tmp_path, mode="background")
    other = synthetic.random_model(synthetic.TINY, "float32", seed=1)
    again.attach("wilor", other)
    assert other._compiled.ready(next(iter(model._compiled._fns)))
    assert again.process is None


def test_a_finished_job_is_not_redone(tmp_path):
    model = synthetic.random_model(synthetic.TINY, "float32")
    spec = kernel_cache.model_spec("wilor", model)
    sig = kernel_cache.signature(spec)
    kernel_cache.mark_warm(tmp_path, sig, spec, 1.0)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"cache": str(tmp_path), "models": [{"signature": sig, **spec}]}))
    t = time.perf_counter()
    assert warm_job.run_job(job) == 0
    assert time.perf_counter() - t < 5


def test_warmup_command_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLX_HANDS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLX_PTX_CACHE_DIR", raising=False)
    folder = synthetic.write_model(tmp_path / "tiny")
    assert main(["warmup", "--model", str(folder), "--batch", "1", "3"]) == 0
    out = capsys.readouterr().out
    assert "WiLoR, batch 1" in out and "WiLoR, batch 3" in out and "hand detector" in out and "warm in" in out
    assert main(["warmup", "--model", str(folder), "--batch", "0"]) == 2
    assert "--batch values must be >= 1" in capsys.readouterr().err


def test_the_warm_up_traces_the_crops_the_pipeline_sends():
    """The crops' dtype is traced into the compiled forward: the warm-up must compile the one the pipeline sends
    (else the switch to the compiled forward compiles a kernel itself: a multi-second stall on a GPU)."""
    model = synthetic.random_model(synthetic.TINY, "float32")
    model.compile = True
    traced = []
    forward_arrays = model.forward_arrays

    def recording(crops, F):
        traced.append(crops.dtype)
        return forward_arrays(crops, F)

    model.forward_arrays = recording
    kernel_cache.forward(model, 1)
    image = np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    for box in ([100, 100, 180, 190], [0, 0, 590, 390]):  # without and with the anti-alias blur
        crops, _, _ = preprocess.crop_hands(image, np.array([box], float), np.array([1]))
        assert mx.array(crops).dtype in traced
    assert mx.uint8 in traced  # photos cut by a user


def test_a_background_compile_that_ends_without_its_marker_falls_back_to_the_foreground(tmp_path, caplog):
    """While the job runs the gate says no; once it has exited without marking the kernels warm, the first call
    compiles in the foreground (one warning) and the model runs compiled."""
    model = synthetic.random_model(synthetic.TINY, "float32")
    model.compile = True
    gate = kernel_cache.Warmup(folder=tmp_path, mode="background")
    gate.attach("wilor", model)
    gate.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])  # a job that fails
    crops = synthetic.make_crops(1, 3)
    model(crops)
    assert not model._compiled._fns  # running: uncompiled
    gate.process.wait(timeout=60)
    model(crops)
    assert model._compiled._fns and "ended without finishing" in caplog.text
