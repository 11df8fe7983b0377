"""Precision variants on the tiny golden model: which layers quantize, accuracy, save/load round trips,
from_pretrained(dtype=, quantize=), the CLI, and one clear error for bad settings or mismatched files."""

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import use_tiny_default_config
from mlx.utils import tree_flatten

from mlx_hands.cli import main
from mlx_hands.convert.quantized import quantize_dir
from mlx_hands.hub import WiLoR
from mlx_hands.pipeline.calibration import calibration_crops
from mlx_hands.quant import (check_settings, parse_quantize, quantization_config, quantize_model, quantized_layers)
from mlx_hands.weights import MODEL_FILE, load_config, load_weights_strict, load_wilor, save_mano, save_model
from test_models import golden, load_golden_model  # noqa: F401  (fixture)

BLOCK_LINEARS = {f"backbone.blocks.{i}.{k}" for i in range(2) for k in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}


@pytest.fixture()
def converted(tmp_path, golden):  # noqa: F811
    """The golden tiny model as a float32 converted folder with its MANO."""
    m = load_golden_model(golden)
    d = save_model(tmp_path / "fp32", wilor={k: np.array(v) for k, v in tree_flatten(m.parameters())},
                   wilor_config=golden["config"])
    save_mano(golden["mano"], d / "mano.safetensors")
    return d


def _out(model, golden):  # noqa: F811
    o = model(mx.array(golden["crops"]))
    return np.array(o.vertices), np.array(o.keypoints_3d)


def _quantized(golden, bits, group_size, **kw):  # noqa: F811
    model = load_golden_model(golden)
    quantize_model(model, bits, group_size, **kw)
    return model


# ---------------------------------------------------------------- which layers


def test_quantizes_only_transformer_linears(golden):  # noqa: F811
    model = load_golden_model(golden)
    entry = quantize_model(model, 4, 64, uniform=True)
    assert entry == {"group_size": 64, "bits": 4, "mode": "affine"}
    assert set(quantized_layers(model)) == BLOCK_LINEARS
    vit, ref = model.backbone, model.refine_net
    assert type(vit.patch_embed.proj) is nn.Conv2d
    for layer in (vit.pose_emb, vit.shape_emb, vit.cam_emb, vit.decpose, vit.decshape, vit.deccam,
                  ref.dec_pose, ref.dec_cam, ref.dec_shape):
        assert type(layer) is nn.Linear
    assert vit.blocks[0].attn.qkv.weight.dtype == mx.uint32
    # everything that is not a packed weight stays float32, MANO included
    floats = {k: v.dtype for k, v in tree_flatten(model.parameters()) if v.dtype != mx.uint32}
    assert set(floats.values()) == {mx.float32}
    assert model.mano._shapedirs.dtype == mx.float32


def test_default_keeps_sensitive_layers_at_higher_precision(golden):  # noqa: F811
    # scaled to depth 2: 4-bit keeps the first quarter of the blocks (1) and every attn.proj at 8 bits
    eight = {"group_size": 64, "bits": 8, "mode": "affine"}
    model = _quantized(golden, 4, 64)
    assert quantization_config(model) == {"group_size": 64, "bits": 4, "mode": "affine",
                                          "backbone.blocks.0.attn.proj": eight, "backbone.blocks.0.attn.qkv": eight,
                                          "backbone.blocks.0.mlp.fc1": eight, "backbone.blocks.0.mlp.fc2": eight,
                                          "backbone.blocks.1.attn.proj": eight}
    # 8-bit keeps the first 1/16 of the blocks (1) in float
    model = _quantized(golden, 8, 64)
    assert set(quantized_layers(model)) == {p for p in BLOCK_LINEARS if p.startswith("backbone.blocks.1.")}
    assert quantization_config(model) == eight
    assert type(model.backbone.blocks[0].attn.qkv) is nn.Linear
    # the full-size model: 2 float blocks at 8 bits; 8 blocks + 32 attn.proj at 8 bits within 4-bit
    from mlx_hands.config import WiLoRConfig
    from mlx_hands.quant import sensitive_overrides

    full = WiLoR(WiLoRConfig())
    assert sum(v is False for v in sensitive_overrides(full, 8).values()) == 8
    assert len(sensitive_overrides(full, 4)) == 8 * 4 + 24


def test_layers_whose_width_does_not_divide_stay_float(golden):  # noqa: F811
    # tiny blocks: qkv/proj/fc1 read 64 features, fc2 reads 256: only fc2 splits into groups of 128
    model = _quantized(golden, 8, 128, uniform=True)
    assert set(quantized_layers(model)) == {"backbone.blocks.0.mlp.fc2", "backbone.blocks.1.mlp.fc2"}
    # the default policy skips them too (its 8-bit layers of block 0 included)
    layers = quantized_layers(_quantized(golden, 4, 128))
    assert layers == {"backbone.blocks.0.mlp.fc2": {"group_size": 128, "bits": 8, "mode": "affine"},
                      "backbone.blocks.1.mlp.fc2": {"group_size": 128, "bits": 4, "mode": "affine"}}
    with pytest.raises(ValueError, match=r"backbone\.blocks\.0\.attn\.qkv: input width 64 is not a multiple"):
        _quantized(golden, 4, 128, overrides={"backbone.blocks.0.attn.qkv": {"bits": 8}})  # asked for: an error


def test_overrides_are_recorded(golden):  # noqa: F811
    model = _quantized(golden, 4, 64, uniform=True, overrides={"backbone.blocks.1.mlp.fc2": {"bits": 8},
                                                               "backbone.blocks.0.attn.qkv": False})
    entry = quantization_config(model)
    assert entry == {"group_size": 64, "bits": 4, "mode": "affine",
                     "backbone.blocks.1.mlp.fc2": {"group_size": 64, "bits": 8, "mode": "affine"}}
    assert "backbone.blocks.0.attn.qkv" not in quantized_layers(model)


# ---------------------------------------------------------------- accuracy (tiny model, golden weights)


@pytest.mark.parametrize("bits, group_size, max_mm", [(8, 64, 1.0), (8, 32, 1.0), (4, 64, 10.0), (4, 32, 10.0)])
def test_quantized_stays_close_to_float32(golden, bits, group_size, max_mm):  # noqa: F811
    ref_v, ref_k = _out(load_golden_model(golden), golden)
    errors = []
    for uniform in (True, False):
        v, k = _out(_quantized(golden, bits, group_size, uniform=uniform), golden)
        errors.append(max(np.abs(v - ref_v).max(), np.abs(k - ref_k).max()) * 1e3)
    assert 1e-4 < errors[0] < max_mm  # quantization changed something, but not much
    assert 1e-4 < errors[1] < errors[0]  # the higher-precision layers help


@pytest.mark.parametrize("dtype, max_mm", [("float16", 1.0), ("bfloat16", 5.0)])
def test_half_precision_stays_close_to_float32(golden, dtype, max_mm):  # noqa: F811
    ref_v, _ = _out(load_golden_model(golden), golden)
    model = load_golden_model(golden)
    model.set_dtype(getattr(mx, dtype))
    v, _ = _out(model, golden)
    assert 1e-5 < np.abs(v - ref_v).max() * 1e3 < max_mm


# ---------------------------------------------------------------- save / load


def test_quantized_dir_round_trip(converted, tmp_path, golden):  # noqa: F811
    dst = quantize_dir(converted, tmp_path / "q4", bits=4, group_size=32, uniform=True)
    config = load_config(dst)
    assert config["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine"}
    assert config["dtype"] == "float32"
    assert (dst / "mano.safetensors").is_file()
    assert (dst / MODEL_FILE).stat().st_size < 0.6 * (converted / MODEL_FILE).stat().st_size
    loaded = load_wilor(dst)
    assert set(quantized_layers(loaded)) == BLOCK_LINEARS
    expected = _out(_quantized(golden, 4, 32, uniform=True), golden)
    for a, b in zip(_out(loaded, golden), expected):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_out(WiLoR.from_pretrained(dst), golden), expected):  # no extra flags needed
        np.testing.assert_array_equal(a, b)


def test_overrides_round_trip(converted, tmp_path, golden):  # noqa: F811
    overrides = {"backbone.blocks.1.mlp.fc2": {"bits": 8}, "backbone.blocks.0.attn.qkv": False}
    dst = quantize_dir(converted, tmp_path / "mixed", bits=4, group_size=64, overrides=overrides)
    loaded = load_wilor(dst)
    assert quantized_layers(loaded)["backbone.blocks.1.mlp.fc2"]["bits"] == 8
    assert quantized_layers(loaded)["backbone.blocks.1.attn.qkv"]["bits"] == 4
    assert "backbone.blocks.0.attn.qkv" not in quantized_layers(loaded)
    assert load_config(dst)["quantization"] == quantization_config(loaded)
    for a, b in zip(_out(loaded, golden), _out(_quantized(golden, 4, 64, overrides=overrides), golden)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("quantize", [8, {"bits": 4, "group_size": 32}, True, {"bits": 4, "uniform": True}])
def test_from_pretrained_quantizes_on_the_fly(converted, tmp_path, golden, quantize):  # noqa: F811
    q = parse_quantize(quantize)
    on_the_fly = WiLoR.from_pretrained(converted, quantize=quantize)
    dst = quantize_dir(converted, tmp_path / "q", bits=q["bits"], group_size=q["group_size"], uniform="uniform" in q)
    stored = load_wilor(dst)
    assert quantization_config(on_the_fly) == load_config(dst)["quantization"]
    assert quantization_config(on_the_fly)["bits"] == q["bits"]
    for a, b in zip(_out(on_the_fly, golden), _out(stored, golden)):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_dir_and_bfloat16_with_int4(converted, tmp_path, golden):  # noqa: F811
    bf = quantize_dir(converted, tmp_path / "bf16", bits=None, dtype="bfloat16")
    config = load_config(bf)
    assert config["dtype"] == "bfloat16" and "quantization" not in config
    model = load_wilor(bf)
    assert model.backbone.blocks[0].mlp.fc1.weight.dtype == mx.bfloat16
    ref_v, _ = _out(load_golden_model(golden), golden)
    assert np.abs(_out(model, golden)[0] - ref_v).max() * 1e3 < 5.0

    q = load_wilor(quantize_dir(converted, tmp_path / "bf16-q4", bits=4, dtype="bfloat16"))
    assert q.backbone.blocks[0].mlp.fc1.scales.dtype == mx.bfloat16
    assert q.backbone.decpose.weight.dtype == mx.bfloat16
    assert np.abs(_out(q, golden)[0] - ref_v).max() * 1e3 < 10.0


def test_cast_after_load(converted, golden):  # noqa: F811
    model = WiLoR.from_pretrained(converted, dtype="float16", quantize=8)
    assert model.backbone.blocks[1].mlp.fc1.scales.dtype == mx.float16
    assert model.backbone.blocks[0].mlp.fc1.weight.dtype == mx.float16  # kept in float
    assert model.backbone.patch_embed.proj.weight.dtype == mx.float16


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("bits, group_size, match", [(3, 64, "bits"), (16, 64, "bits"), (4, 48, "group size"),
                                                     (8, 256, "group size"), (True, 64, "bits")])
def test_unsupported_settings(golden, bits, group_size, match):  # noqa: F811
    with pytest.raises(ValueError, match=match):
        check_settings(bits, group_size)
    with pytest.raises(ValueError, match=match):
        quantize_model(load_golden_model(golden), bits, group_size)


@pytest.mark.parametrize("quantize", ["int4", 3, {"bits": 4, "group": 64}, {"bits": 4, "group_size": 100}])
def test_bad_quantize_argument(converted, quantize):
    with pytest.raises(ValueError, match="quantize|bits|group"):
        WiLoR.from_pretrained(converted, quantize=quantize)


def test_requantizing_is_refused(converted, tmp_path, golden):  # noqa: F811
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(_quantized(golden, 4, 64), 8, 64)
    q4 = quantize_dir(converted, tmp_path / "q4", bits=4, group_size=64)
    with pytest.raises(ValueError, match="already quantized.*4-bit"):
        WiLoR.from_pretrained(q4, quantize=8)
    assert quantization_config(WiLoR.from_pretrained(q4, quantize=4))["bits"] == 4  # as stored: fine
    with pytest.raises(ValueError, match="already quantized"):
        quantize_dir(q4, tmp_path / "again", bits=8)


def test_config_and_weights_disagree(converted, tmp_path):
    q4 = quantize_dir(converted, tmp_path / "q4", bits=4, group_size=64)
    cfg = json.loads((q4 / "config.json").read_text())
    cfg["quantization"]["bits"] = 8
    (q4 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"backbone\.blocks\.1\.attn\.qkv is stored 4-bit with group size 64, "
                       r"but config\.json says 8-bit .*do not belong together"):
        load_wilor(q4)
    # config.json says quantized, the weights are float
    cfg = json.loads((converted / "config.json").read_text())
    cfg["quantization"] = {"group_size": 64, "bits": 4, "mode": "affine"}
    (converted / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="carry no quantization scales"):
        load_wilor(converted)


def _rewrite(path, edit):
    arrays = mx.load(str(path / MODEL_FILE))
    edit(arrays)
    mx.save_safetensors(str(path / MODEL_FILE), arrays, metadata={"format": "mlx"})


def test_missing_or_misshaped_quantized_tensors(converted, tmp_path):
    q4 = quantize_dir(converted, tmp_path / "q4", bits=4, group_size=64)
    _rewrite(q4, lambda a: a.pop("wilor.backbone.blocks.1.mlp.fc1.biases"))
    with pytest.raises(ValueError, match=r"missing 1 tensors \(e\.g\. backbone\.blocks\.1\.mlp\.fc1\.biases"):
        load_wilor(q4)
    q4 = quantize_dir(converted, tmp_path / "q4b", bits=4, group_size=64)
    _rewrite(q4, lambda a: a.update({"wilor.backbone.blocks.0.mlp.fc2.scales": mx.zeros((64, 3))}))
    with pytest.raises(ValueError, match=r"backbone\.blocks\.0\.mlp\.fc2 has quantized weight .* fit no bit width"):
        load_wilor(q4)


def test_quantized_weights_into_float_model(converted, tmp_path):
    q4 = quantize_dir(converted, tmp_path / "q4", bits=4, group_size=64)
    arrays = {k[6:]: v for k, v in mx.load(str(q4 / MODEL_FILE)).items()}
    with pytest.raises(ValueError, match="the file is quantized and the other is not"):
        load_weights_strict(WiLoR(load_wilor(converted).config), arrays, "q4")


# ---------------------------------------------------------------- command line


def test_cli_quantize(converted, tmp_path, golden, capsys):  # noqa: F811
    assert main(["quantize", str(converted), "-o", str(tmp_path / "q8"), "--q-bits", "8"]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    assert load_config(tmp_path / "q8")["quantization"]["bits"] == 8
    assert main(["quantize", str(converted), "-o", str(tmp_path / "q4")]) == 0  # default: 4-bit, group 64, mixed
    q = load_config(tmp_path / "q4")["quantization"]
    assert (q["bits"], q["group_size"], q["backbone.blocks.1.attn.proj"]["bits"]) == (4, 64, 8)
    assert main(["quantize", str(converted), "-o", str(tmp_path / "u4"), "--q-uniform"]) == 0
    assert load_config(tmp_path / "u4")["quantization"] == {"group_size": 64, "bits": 4, "mode": "affine"}
    assert main(["quantize", str(converted), "-o", str(tmp_path / "f16"), "--dtype", "float16", "--no-quantize"]) == 0
    assert load_config(tmp_path / "f16")["dtype"] == "float16" and "quantization" not in load_config(tmp_path / "f16")
    # errors: one line, exit status 2
    assert main(["quantize", str(tmp_path / "q4"), "-o", str(tmp_path / "x")]) == 2
    assert "already quantized" in capsys.readouterr().err
    assert main(["quantize", str(converted), "-o", str(tmp_path / "y"), "--no-quantize"]) == 2
    assert "--no-quantize needs --dtype" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["quantize", str(converted), "-o", str(tmp_path / "z"), "--q-bits", "3"])
    assert e.value.code == 2 and "invalid choice: 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["quantize", str(converted), "-o", str(tmp_path / "z"), "--q-group-size", "48"])


def test_convert_with_quantization(tmp_path, golden, monkeypatch, capsys):  # noqa: F811
    pytest.importorskip("torch")  # only to write the real-format checkpoint
    from mlx_hands.convert import convert
    from synth import write_mano_pkl, write_torch_checkpoint

    write_torch_checkpoint(tmp_path / "wilor_final.ckpt", golden["state"])
    np.savez(tmp_path / "mano_mean_params.npz", **golden["mean"])
    write_mano_pkl(tmp_path / "MANO_RIGHT.pkl", golden["mano"])
    dst = convert(tmp_path, tmp_path / "q8", config=golden["config"], q_bits=8, q_group_size=32)
    assert load_config(dst)["quantization"] == {"group_size": 32, "bits": 8, "mode": "affine"}
    for a, b in zip(_out(load_wilor(dst), golden), _out(_quantized(golden, 8, 32), golden)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="group size"):
        convert(tmp_path, tmp_path / "bad", config=golden["config"], q_bits=4, q_group_size=48)
    assert not (tmp_path / "bad").exists()  # refused before any work

    use_tiny_default_config(monkeypatch, golden["config"])  # the CLI converts with the default config
    assert main(["convert", str(tmp_path), "-o", str(tmp_path / "cli"), "--q-group-size", "32", "--q-uniform"]) == 0
    assert load_config(tmp_path / "cli")["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine"}
    assert main(["convert", str(tmp_path), "-o", str(tmp_path / "cli8"), "-q", "--q-bits", "8",
                 "--dtype", "bfloat16"]) == 0
    config = load_config(tmp_path / "cli8")
    assert config["quantization"]["bits"] == 8 and config["dtype"] == "bfloat16"
    np.save(tmp_path / "crops.npy", _calibration(golden).astype(np.uint8))
    assert main(["convert", str(tmp_path), "-o", str(tmp_path / "g4"), "-q", "--q-group-size", "32", "--q-uniform",
                 "--calibrate", str(tmp_path / "crops.npy")]) == 0
    direct = _quantized(golden, 4, 32, uniform=True, calibration=_calibration(golden).astype(np.uint8))
    np.testing.assert_allclose(_out(load_wilor(tmp_path / "g4"), golden)[0], _out(direct, golden)[0], atol=1e-6)
    assert not (tmp_path / "g4.float").exists()  # the float intermediate is removed
    capsys.readouterr()
    assert main(["convert", str(tmp_path), "-o", str(tmp_path / "x"), "--calibrate", str(tmp_path / "crops.npy")]) == 2
    assert "add -q" in capsys.readouterr().err


# ---------------------------------------------------------------- GPTQ (calibrated levels)


@pytest.mark.parametrize("bits", [4, 8])
def test_pack_levels_is_mlx_layout(bits):
    from mlx_hands.quant.gptq import pack_levels

    w = mx.array(np.random.default_rng(bits).normal(size=(8, 128)).astype(np.float32))
    packed, scales, biases = mx.quantize(w, 32, bits)
    deq = np.array(mx.dequantize(packed, scales, biases, 32, bits))
    levels = np.rint((deq - np.repeat(np.array(biases), 32, 1)) / np.repeat(np.array(scales), 32, 1))
    assert levels.min() >= 0 and levels.max() <= 2**bits - 1
    np.testing.assert_array_equal(pack_levels(levels.astype(np.int64), bits), np.array(packed))


@pytest.mark.parametrize("bits, group_size", [(4, 32), (4, 64), (8, 64)])
def test_gptq_layer_beats_rounding_on_correlated_inputs(bits, group_size):
    """On inputs with correlated features (as activations are), GPTQ's output error is smaller than
    round-to-nearest's, and its parts dequantize through MLX to exactly scales * levels + biases."""
    from mlx_hands.quant.gptq import gptq_quantize, pack_levels

    rng = np.random.default_rng(0)
    n_in, n_out = 128, 48
    mix = rng.normal(size=(n_in, n_in)) * np.exp(-np.arange(n_in) / 16)[:, None]  # decaying spectrum
    x = (rng.normal(size=(4096, n_in)) @ mix).astype(np.float32)
    w = rng.normal(0, 0.02, (n_out, n_in)).astype(np.float32)
    levels, scales, biases = gptq_quantize(w, x.T @ x / len(x), bits, group_size)
    assert levels.max() <= 2**bits - 1 and scales.shape == (n_out, n_in // group_size)
    mine = np.repeat(scales, group_size, 1) * levels + np.repeat(biases, group_size, 1)
    deq = np.array(mx.dequantize(mx.array(pack_levels(levels, bits)), mx.array(scales), mx.array(biases),
                                 group_size, bits))
    np.testing.assert_allclose(deq, mine, rtol=0, atol=1e-7)
    rtn = np.array(mx.dequantize(*mx.quantize(mx.array(w), group_size, bits), group_size, bits))
    err_gptq = np.linalg.norm(x @ (mine - w).T)
    err_rtn = np.linalg.norm(x @ (rtn - w).T)
    assert err_gptq < 0.8 * err_rtn


def _calibration(golden):  # noqa: F811
    """Crops other than the test crops: the golden crops mirrored and shifted."""
    c = np.asarray(golden["crops"], np.float32)
    return np.concatenate([c[:, :, ::-1], np.roll(c, 37, axis=1), np.roll(c, -53, axis=2)])


def test_calibrated_quantization_is_more_accurate(golden):  # noqa: F811
    ref_v, ref_k = _out(load_golden_model(golden), golden)
    err = {}
    for name, calib in (("rtn", None), ("gptq", _calibration(golden))):
        v, k = _out(_quantized(golden, 4, 32, uniform=True, calibration=calib), golden)
        err[name] = max(np.abs(v - ref_v).max(), np.abs(k - ref_k).max())
    assert 0 < err["gptq"] < 0.7 * err["rtn"]


def test_calibrated_dir_round_trip_and_cli(converted, tmp_path, golden, capsys):  # noqa: F811
    np.save(tmp_path / "crops.npy", _calibration(golden).astype(np.uint8))
    dst = quantize_dir(converted, tmp_path / "g4", bits=4, group_size=32, uniform=True,
                       calibration=calibration_crops([tmp_path / "crops.npy"]))
    direct = _quantized(golden, 4, 32, uniform=True, calibration=_calibration(golden).astype(np.uint8))
    v, _ = _out(load_wilor(dst), golden)  # no flags: the file says how it is quantized
    np.testing.assert_allclose(v, _out(direct, golden)[0], rtol=0, atol=1e-6)
    assert main(["quantize", str(converted), "-o", str(tmp_path / "c8"), "--q-bits", "8",
                 "--calibrate", str(tmp_path / "crops.npy")]) == 0
    assert load_config(tmp_path / "c8")["quantization"]["bits"] == 8
    capsys.readouterr()
    # errors: one line each
    assert main(["quantize", str(converted), "-o", str(tmp_path / "x"), "--dtype", "float16", "--no-quantize",
                 "--calibrate", str(tmp_path / "crops.npy")]) == 2
    assert "--calibrate only serves quantization" in capsys.readouterr().err
    photo = tmp_path / "hand.png"
    import cv2

    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    assert main(["quantize", str(converted), "-o", str(tmp_path / "y"), "--calibrate", str(photo)]) == 2
    assert "needs the hand detector" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((2, 128, 128, 3), np.uint8))
    assert main(["quantize", str(converted), "-o", str(tmp_path / "z"), "--calibrate", str(tmp_path / "bad.npy")]) == 2
    assert "expected crops of shape" in capsys.readouterr().err
    assert main(["quantize", str(converted), "-o", str(tmp_path / "z"), "--calibrate", str(tmp_path / "none.npy")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("crops, match", [
    (np.zeros((2, 64, 64, 3), np.uint8), "must have shape"),
    (np.zeros((0, 256, 256, 3), np.uint8), "empty"),
    (np.full((2, 256, 256, 3), 300.0, np.float32), "0..255"),
    (np.zeros((2, 256, 256, 3), np.int32), "uint8 or float"),
])
def test_bad_calibration_crops(golden, crops, match):  # noqa: F811
    with pytest.raises(ValueError, match=match):
        _quantized(golden, 4, 64, calibration=crops)


def test_cpu_warns_for_half_and_quantized_models(converted, tmp_path, caplog):
    assert mx.default_device().type == mx.DeviceType.cpu  # the test machines
    load_wilor(converted)
    assert "slower than float32" not in caplog.text
    quantize_dir(converted, tmp_path / "h", bits=None, dtype="bfloat16")
    load_wilor(tmp_path / "h")
    assert "is bfloat16" in caplog.text and "use a float32 model on a CPU" in caplog.text
    caplog.clear()
    quantize_dir(converted, tmp_path / "q", bits=8)
    load_wilor(tmp_path / "q")
    assert "is quantized" in caplog.text
