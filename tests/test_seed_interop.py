"""The seed project's published weights (lyonsno/wilor-mlx: wilor-mlx.safetensors, wilor-mlx-int4.safetensors)
load to the same outputs as our own model: synthetic files written here in their key layout, plain and
4-bit, from the tiny golden model."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import use_tiny_default_config
from mlx.utils import tree_flatten

from mlx_hands import hub
from mlx_hands.cli import main
from mlx_hands.convert import convert
from mlx_hands.hub import WiLoR
from mlx_hands.quant import quantization_config, quantize_model, quantized_layers
from mlx_hands.weights import load_config, load_wilor
from test_models import golden, load_golden_model  # noqa: F401  (fixture)

# Their save_mlx_weights / load_safetensors_weights names for our RefineNet layers (src/wilor_mlx/convert.py)
SEED_NAMES = {
    "refine_net.deconv.first_conv.0": "refine_net.deconv.first_conv",
    "refine_net.deconv.deconv.0.0": "refine_net.deconv.branch0_conv",
    "refine_net.deconv.deconv.0.1": "refine_net.deconv.branch0_bn",
    "refine_net.deconv.deconv.1.0": "refine_net.deconv.branch1_conv0",
    "refine_net.deconv.deconv.1.1": "refine_net.deconv.branch1_bn0",
    "refine_net.deconv.deconv.1.3": "refine_net.deconv.branch1_conv1",
    "refine_net.deconv.deconv.1.4": "refine_net.deconv.branch1_bn1",
}


def write_seed_file(path, model, mano=None):
    """Our model's parameters in the seed's layout: same backbone/decoder names, their RefineNet names,
    IMAGE_MEAN/IMAGE_STD (1, 1, 1, 3); quantized layers as nn.QuantizedLinear holds them (weight uint32,
    scales, biases, bias), as their int4 file does; mano.* only when given (early uploads carried it)."""
    out = {}
    for key, v in tree_flatten(model.parameters()):
        layer, leaf = key.rsplit(".", 1)
        out[f"{SEED_NAMES.get(layer, layer)}.{leaf}"] = v
    out["IMAGE_MEAN"] = mx.array([0.485, 0.456, 0.406]).reshape(1, 1, 1, 3)
    out["IMAGE_STD"] = mx.array([0.229, 0.224, 0.225]).reshape(1, 1, 1, 3)
    for k, v in (mano or {}).items():
        out[f"mano.{k}"] = mx.array(v)
    path.parent.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(path), out)  # no metadata, like theirs
    return path


@pytest.fixture()
def mano_npz(tmp_path, golden):  # noqa: F811
    """wilor-mlx's own cached mano.npz layout: canonical arrays plus its index arrays and mean params."""
    path = tmp_path / "mano.npz"
    np.savez(path, **golden["mano"], extra_joints_idxs=np.array([744, 320, 443, 554, 671], np.int32),
             joint_map=np.array([0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20], np.int32),
             init_hand_pose=golden["mean"]["pose"], init_betas=golden["mean"]["shape"], init_cam=golden["mean"]["cam"])
    return path


@pytest.fixture()
def tiny_default(monkeypatch, golden):  # noqa: F811
    # the seed file has no config; head count comes from the default config, which is the released model's
    use_tiny_default_config(monkeypatch, golden["config"])


def _quantized(golden, **kw):  # noqa: F811
    # their int4 file quantizes every layer it quantizes at 4 bits
    model = load_golden_model(golden)
    quantize_model(model, 4, 32, uniform=True, **kw)
    return model


def _assert_same(a, b, golden):  # noqa: F811
    x = mx.array(golden["crops"])
    oa, ob = a(x), b(x)
    for f in ("vertices", "keypoints_3d", "cam", "betas", "hand_pose"):
        np.testing.assert_array_equal(np.array(getattr(oa, f)), np.array(getattr(ob, f)), err_msg=f)


def load_seed(path, tmp_path, config, mano=None):
    """What from_pretrained does with a seed file, with an explicit config: convert once, then load."""
    dst = tmp_path / f"converted-{path.stem}"
    convert(None, dst, seed=path, mano=mano, config=config)
    return load_wilor(dst)


# ---------------------------------------------------------------- loading


def test_plain_file_loads_to_identical_outputs(tmp_path, golden, mano_npz):  # noqa: F811
    ours = load_golden_model(golden)
    f = write_seed_file(tmp_path / "wilor-mlx.safetensors", ours)
    model = load_seed(f, tmp_path, golden["config"], mano_npz)
    assert quantization_config(model) is None
    _assert_same(model, ours, golden)


def test_int4_file_loads_to_identical_outputs(tmp_path, golden, mano_npz):  # noqa: F811
    # their int4 file also reads scales on the token embeddings and decoders: cover a decoder too
    ours = _quantized(golden, overrides={"backbone.decpose": {"bits": 4}})
    f = write_seed_file(tmp_path / "wilor-mlx-int4.safetensors", ours)
    model = load_seed(f, tmp_path, golden["config"], mano_npz)
    assert quantized_layers(model) == quantized_layers(ours)
    assert model.backbone.decpose.bits == 4 and model.backbone.decpose.group_size == 32
    _assert_same(model, ours, golden)


def test_file_carrying_mano_needs_no_mano_path(tmp_path, golden):  # noqa: F811
    ours = load_golden_model(golden)
    m = dict(golden["mano"])
    m["faces_tensor"] = m.pop("faces")  # their MANO module's buffer name
    m["parents"] = np.where(m["parents"] < 0, 2**32 - 1, m["parents"]).astype(np.uint32)  # root as kintree stores it
    f = write_seed_file(tmp_path / "old.safetensors", ours, mano=m)
    _assert_same(load_seed(f, tmp_path, golden["config"]), ours, golden)


def test_from_pretrained_paths(tmp_path, golden, mano_npz, tiny_default):  # noqa: F811
    ours = load_golden_model(golden)
    f = write_seed_file(tmp_path / "seed" / "wilor-mlx.safetensors", ours)
    _assert_same(WiLoR.from_pretrained(f, mano_path=mano_npz), ours, golden)
    _assert_same(WiLoR.from_pretrained(f.parent, mano_path=mano_npz), ours, golden)  # their download folder
    q = WiLoR.from_pretrained(str(f), mano_path=mano_npz, quantize=8)  # quantized on the fly
    assert quantization_config(q)["bits"] == 8


def test_from_pretrained_hub(tmp_path, golden, mano_npz, tiny_default, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MLX_HANDS_CACHE", str(tmp_path / "cache"))
    files = {"wilor-mlx.safetensors": write_seed_file(tmp_path / "a.safetensors", load_golden_model(golden)),
             "wilor-mlx-int4.safetensors": write_seed_file(tmp_path / "b.safetensors", _quantized(golden))}
    calls = []

    def fake_download(repo_id, filename, subfolder=None, revision=None, local_files_only=False):
        """huggingface_hub's download (the Hub cannot be reached here); nothing is in its cache at first."""
        if local_files_only:
            raise FileNotFoundError(filename)
        calls.append((repo_id, filename, revision))
        return str(files[filename])

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(hub, "_reachable", lambda *a: None)
    _assert_same(WiLoR.from_pretrained("BasinShapers/wilor-mlx", mano_path=mano_npz), load_golden_model(golden), golden)
    model = WiLoR.from_pretrained("BasinShapers/wilor-mlx/wilor-mlx-int4.safetensors", mano_path=mano_npz,
                                  revision="v1")
    _assert_same(model, _quantized(golden), golden)
    assert calls == [("BasinShapers/wilor-mlx", "wilor-mlx.safetensors", None),
                     ("BasinShapers/wilor-mlx", "wilor-mlx-int4.safetensors", "v1")]

    def offline(*a, **k):
        raise OSError("offline")

    monkeypatch.setattr(hub, "hf_hub_download", offline)
    monkeypatch.setenv("MLX_HANDS_CACHE", str(tmp_path / "cache2"))
    with pytest.raises(FileNotFoundError, match="could not download wilor-mlx.safetensors from the Hugging Face Hub"):
        WiLoR.from_pretrained("BasinShapers/wilor-mlx", mano_path=mano_npz)


def test_a_converted_folder_wins_over_a_seed_file_in_it(tmp_path):
    (tmp_path / "conv").mkdir()
    (tmp_path / "conv" / "config.json").write_text("{}")
    (tmp_path / "conv" / "wilor-mlx.safetensors").write_bytes(b"")
    assert hub.resolve(tmp_path / "conv") == tmp_path / "conv"
    with pytest.raises(FileNotFoundError, match="neither a converted mlx-hands model"):
        hub.resolve(tmp_path / "conv" / "config.json")


# ---------------------------------------------------------------- conversion to the canonical folder


def test_convert_seed_files(tmp_path, golden, mano_npz, tiny_default, capsys):  # noqa: F811
    plain = write_seed_file(tmp_path / "wilor-mlx.safetensors", load_golden_model(golden))
    dst = convert(plain, tmp_path / "plain", mano=mano_npz)
    assert "quantization" not in load_config(dst)
    _assert_same(load_wilor(dst), load_golden_model(golden), golden)

    q = _quantized(golden)
    int4 = write_seed_file(tmp_path / "wilor-mlx-int4.safetensors", q)
    assert main(["convert", str(int4), "--mano", str(mano_npz), "-o", str(tmp_path / "int4")]) == 0
    assert load_config(tmp_path / "int4")["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine"}
    _assert_same(load_wilor(tmp_path / "int4"), q, golden)
    # a quantized file cannot be quantized again
    assert main(["convert", str(int4), "--mano", str(mano_npz), "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "already quantized" in capsys.readouterr().err


# ---------------------------------------------------------------- bad input


def test_no_mano_is_one_clear_error(tmp_path, golden):  # noqa: F811
    f = write_seed_file(tmp_path / "wilor-mlx.safetensors", load_golden_model(golden))
    with pytest.raises(FileNotFoundError, match="no MANO model.*--mano MANO_RIGHT.pkl"):
        load_seed(f, tmp_path, golden["config"])
    m = {k: v for k, v in golden["mano"].items() if k != "faces"}
    f = write_seed_file(tmp_path / "partial.safetensors", load_golden_model(golden), mano=m)
    with pytest.raises(ValueError, match="incomplete MANO model \\(no faces\\)"):
        load_seed(f, tmp_path, golden["config"])


@pytest.mark.parametrize("edit, match", [
    (lambda a: a.pop("backbone.blocks.1.mlp.fc2.bias"),
     r"missing 1 tensors \(e\.g\. backbone\.blocks\.1\.mlp\.fc2\.bias"),
    (lambda a: a.pop("refine_net.deconv.branch1_bn0.running_var"), r"refine_net\.deconv\.deconv\.1\.1\.running_var"),
    (lambda a: a.update({"refine_net.dec_cam.weight": mx.zeros((4, 112))}), r"mis-shaped: refine_net\.dec_cam\.weight"),
    (lambda a: a.update({"IMAGE_STD": mx.ones((1, 1, 1, 3))}), "IMAGE_STD .* normalises its input differently"),
    (lambda a: a.pop("backbone.pos_embed"), "not a wilor-mlx weights file"),
    (lambda a: a.update({"backbone.blocks.0.mlp.fc1.scales": mx.zeros((256, 3))}),
     r"blocks\.0\.mlp\.fc1 has quantized"),
])
def test_damaged_files(tmp_path, golden, mano_npz, edit, match):  # noqa: F811
    src = tmp_path / "good.safetensors"
    arrays = mx.load(str(write_seed_file(src, _quantized(golden))))
    edit(arrays)
    bad = tmp_path / "bad.safetensors"
    mx.save_safetensors(str(bad), arrays)
    with pytest.raises(ValueError, match=match):
        WiLoR.from_pretrained(bad, mano_path=mano_npz)
    with pytest.raises(ValueError, match=match):  # convert refuses it, before writing anything
        convert(bad, tmp_path / "out", mano=mano_npz, config=golden["config"])
    assert not (tmp_path / "out").exists()


def test_not_a_safetensors_file(tmp_path, golden, mano_npz):  # noqa: F811
    bad = tmp_path / "wilor-mlx.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        WiLoR.from_pretrained(bad, mano_path=mano_npz)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        convert(bad, tmp_path / "out", mano=mano_npz, config=golden["config"])


def test_canonical_file_is_pointed_to_its_folder(tmp_path, golden, mano_npz):  # noqa: F811
    arrays = {"wilor." + k: v for k, v in tree_flatten(load_golden_model(golden).parameters())}
    mx.save_safetensors(str(tmp_path / "other.safetensors"), arrays)
    with pytest.raises(ValueError, match="mlx-hands model.safetensors.*pass the folder"):
        WiLoR.from_pretrained(tmp_path / "other.safetensors", mano_path=mano_npz)
