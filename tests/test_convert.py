"""Original files (real torch.save checkpoint, MANO release pickle, mean-params npz) -> convert ->
strict load, end to end; from_pretrained's local, Hub and offline paths."""

import numpy as np
import pytest
from conftest import use_tiny_default_config

import mlx.core as mx
from mlx_hands import hub
from mlx_hands.cli import main
from mlx_hands.convert import convert
from mlx_hands.hub import WiLoR
from mlx_hands.weights import load_wilor
from synth import write_mano_pkl, write_torch_checkpoint
from test_models import GOLDEN, golden  # noqa: F401  (fixture)

pytest.importorskip("torch")  # only to *write* the real-format checkpoint


@pytest.fixture()
def originals(tmp_path, golden):  # noqa: F811
    """A WiLoR-mini style folder: pretrained_models/{wilor_final.ckpt, mano_mean_params.npz, MANO_RIGHT.pkl}."""
    folder = tmp_path / "originals" / "pretrained_models"
    folder.mkdir(parents=True)
    state = dict(golden["state"])
    # what a real Lightning checkpoint carries besides the weights we use
    state["discriminator.D_conv_pose.0.weight"] = np.ones((32, 9, 1), np.float32)
    state["mano.v_template"] = golden["mano"]["v_template"]
    state["refine_net.deconv.deconv.0.1.num_batches_tracked"] = np.array(7)
    state["backbone.some_future_buffer"] = np.zeros(3, np.float32)
    write_torch_checkpoint(folder / "wilor_final.ckpt", state)
    np.savez(folder / "mano_mean_params.npz", **golden["mean"])
    write_mano_pkl(folder / "MANO_RIGHT.pkl", golden["mano"])
    return folder.parent


def _assert_matches_golden(model, golden, atol=1e-5):  # noqa: F811
    out = model(mx.array(golden["crops"]))
    np.testing.assert_allclose(np.array(out.vertices), golden["out"]["pred_vertices"], rtol=0, atol=atol)
    np.testing.assert_allclose(np.array(out.keypoints_3d), golden["out"]["pred_keypoints_3d"], rtol=0, atol=atol)


def _tiny_default_config(monkeypatch, golden):  # noqa: F811
    use_tiny_default_config(monkeypatch, golden["config"])


def test_convert_round_trip(originals, tmp_path, golden):  # noqa: F811
    dst = convert(originals, tmp_path / "converted", config=golden["config"])
    assert {p.name for p in dst.iterdir()} == {"config.json", "model.safetensors", "mano.safetensors"}
    _assert_matches_golden(load_wilor(dst), golden)


def test_convert_float16(originals, tmp_path, golden):  # noqa: F811
    dst = convert(originals, tmp_path / "fp16", config=golden["config"], dtype="float16")
    model = load_wilor(dst)
    assert model.backbone.blocks[0].attn.qkv.weight.dtype == mx.float16
    _assert_matches_golden(model, golden, atol=2e-3)


def test_missing_key_is_named(tmp_path, golden):  # noqa: F811
    state = {k: v for k, v in golden["state"].items() if k != "backbone.blocks.1.attn.proj.weight"}
    write_torch_checkpoint(tmp_path / "wilor_final.ckpt", state)
    with pytest.raises(ValueError, match=r"backbone\.blocks\.1\.attn\.proj\.weight"):
        convert(None, tmp_path / "out", checkpoint=tmp_path / "wilor_final.ckpt", config=golden["config"])


def test_misshaped_key_is_named(tmp_path, golden):  # noqa: F811
    state = dict(golden["state"])
    state["refine_net.dec_cam.weight"] = np.zeros((4, 56), np.float32)
    write_torch_checkpoint(tmp_path / "wilor_final.ckpt", state)
    with pytest.raises(ValueError, match=r"refine_net\.dec_cam\.weight"):
        convert(None, tmp_path / "out", checkpoint=tmp_path / "wilor_final.ckpt", config=golden["config"])


def test_truncated_checkpoint(originals, tmp_path, golden):  # noqa: F811
    ckpt = originals / "pretrained_models" / "wilor_final.ckpt"
    data = ckpt.read_bytes()
    bad = tmp_path / "wilor_final.ckpt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="wilor_final.ckpt"):
        convert(None, tmp_path / "out", checkpoint=bad, config=golden["config"])
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_nothing_to_convert(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to convert"):
        convert(tmp_path, tmp_path / "out")


def test_cli_convert(originals, tmp_path, golden, monkeypatch, capsys):  # noqa: F811
    _tiny_default_config(monkeypatch, golden)
    assert main(["convert", str(originals), "-o", str(tmp_path / "cli")]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    _assert_matches_golden(load_wilor(tmp_path / "cli"), golden)
    assert main(["convert", str(tmp_path / "empty"), "-o", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_from_pretrained_local_folder_converts_once(originals, tmp_path, golden, monkeypatch):  # noqa: F811
    _tiny_default_config(monkeypatch, golden)
    monkeypatch.setenv("MLX_HANDS_CACHE", str(tmp_path / "cache"))
    model = WiLoR.from_pretrained(originals)
    _assert_matches_golden(model, golden)
    converted = list((tmp_path / "cache" / "local").iterdir())
    assert len(converted) == 1
    stamp = (converted[0] / "model.safetensors").stat().st_mtime_ns
    WiLoR.from_pretrained(originals)
    assert (converted[0] / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not converted again
    _assert_matches_golden(WiLoR.from_pretrained(converted[0]), golden)  # a converted dir loads directly


def test_from_pretrained_hub(originals, tmp_path, golden, monkeypatch):  # noqa: F811
    _tiny_default_config(monkeypatch, golden)
    monkeypatch.setenv("MLX_HANDS_CACHE", str(tmp_path / "cache"))
    snapshot = tmp_path / "hf" / "snapshots" / "0123456789abcdef"
    calls = []

    (originals / "pretrained_models" / "detector.pt").write_bytes((GOLDEN.parent / "detector_tiny.pt").read_bytes())

    def fake_download(repo_id, filename, subfolder=None, revision=None, local_files_only=False):
        """huggingface_hub's download into a snapshot folder of its cache (the Hub cannot be reached here)."""
        q = snapshot / subfolder / filename
        if local_files_only:
            if not q.exists():
                raise FileNotFoundError(f"{filename} is not in the cache")
            return str(q)
        calls.append((repo_id, subfolder, filename))
        q.parent.mkdir(parents=True, exist_ok=True)
        q.write_bytes((originals / subfolder / filename).read_bytes())
        return str(q)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(hub, "_reachable", lambda *a: None)
    model = WiLoR.from_pretrained()
    assert sorted(c[2] for c in calls) == sorted(["wilor_final.ckpt", "mano_mean_params.npz", "MANO_RIGHT.pkl",
                                                  "detector.pt"])
    assert all(c[:2] == ("warmshao/WiLoR-mini", "pretrained_models") for c in calls)
    (converted,) = (tmp_path / "cache").glob("warmshao--WiLoR-mini-*")
    assert (converted / "mano.safetensors").is_file()
    _assert_matches_golden(model, golden)
    calls.clear()
    loaded = hub.load()  # the files are in the Hub cache now: no download, no second conversion
    assert calls == [] and loaded.path == converted and loaded.detector is not None
    assert loaded.info["revision"] == "0123456789abcdef"


@pytest.mark.parametrize("hub_env", ["refused", "silent", "offline"])
def test_first_run_without_the_hub_fails_fast_in_one_line(tmp_path, hub_env):
    """A new user's first `mlx-hands predict` with no network (a real huggingface_hub in a real process): a Hub
    that refuses connections, one that accepts and never answers, and HF_HUB_OFFLINE=1. One short line naming the
    files and the command to run, in seconds (huggingface_hub alone retries for minutes)."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import cv2

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    if hub_env == "silent":
        server.listen(8)  # connections are accepted by the kernel and never answered
    else:
        server.close()  # nothing listens: refused
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "MLX_HANDS_CACHE": str(tmp_path / "cache"),
           "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    if hub_env == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.zeros((32, 32, 3), np.uint8))
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "mlx_hands", "predict", str(tmp_path / "photo.jpg"), "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=120, env=env)
    seconds = time.monotonic() - t
    server.close()
    assert r.returncode == 2 and seconds < 30, (seconds, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    msg = lines[0]
    assert "wilor_final.ckpt" in msg and "MANO_RIGHT.pkl" in msg and "huggingface.co/warmshao/WiLoR-mini" in msg
    assert "mlx-hands predict IMAGE --model FOLDER" in msg and len(msg) < 400
    assert not (tmp_path / "out").exists()  # nothing left behind


def test_missing_mano_error(originals, tmp_path, golden):  # noqa: F811
    dst = convert(None, tmp_path / "nomano", checkpoint=originals / "pretrained_models" / "wilor_final.ckpt",
                  config=golden["config"])
    with pytest.raises(FileNotFoundError, match="MANO"):
        load_wilor(dst)
    model = WiLoR.from_pretrained(dst, mano_path=originals / "pretrained_models" / "MANO_RIGHT.pkl")
    _assert_matches_golden(model, golden)


def test_conversion_and_import_need_no_torch(originals, tmp_path, golden):  # noqa: F811
    """`import mlx_hands`, conversion and loading run with torch, chumpy and scipy unavailable."""
    import json
    import subprocess
    import sys

    cfg = json.dumps(golden["config"].to_dict())
    script = f"""
import sys
for m in ("torch", "chumpy", "scipy", "scipy.sparse", "ultralytics"):
    sys.modules[m] = None  # any import of them fails
import json, numpy as np, mlx.core as mx
import mlx_hands
from mlx_hands.config import WiLoRConfig
from mlx_hands.convert import convert
from mlx_hands.weights import load_wilor
dst = convert({str(originals)!r}, {str(tmp_path / "out")!r}, config=WiLoRConfig.from_dict(json.loads({cfg!r})))
out = load_wilor(dst)(mx.array(np.load({str(GOLDEN)!r})["crops"]))
print(float(np.abs(np.array(out.vertices) - np.load({str(GOLDEN)!r})["out/pred_vertices"]).max()))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.strip()) < 1e-5
