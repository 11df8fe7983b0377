"""Smoke tests of the benchmark harness on a tiny model (no timing assertions)."""

import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_hands import bench, synthetic
from mlx_hands.blas import cpu_gemm_gflops, find_openblas
from mlx_hands.cli import main
from mlx_hands.config import WiLoRConfig
from mlx_hands.synthetic import TINY
from mlx_hands.synthetic import TINY_DETECTOR as TINY_DET

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import roofline  # noqa: E402 (benchmarks/roofline.py)

FIELDS = ("p50", "p90", "p95", "p99", "min", "mean")


def test_summarize_percentiles():
    s = bench.summarize(np.arange(1, 101, dtype=float))
    assert s["min"] == 1 and s["p50"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01)
    assert s["p50"] <= s["p90"] <= s["p95"] <= s["p99"]
    with pytest.raises(ValueError):
        bench.summarize([])


def test_time_calls_counts_and_stops():
    calls = []
    t = bench.time_calls(calls.append, warmup=2, iters=7)
    assert len(t) == 7 and len(calls) == 9 and (t >= 0).all()
    t = bench.time_calls(lambda i: None, warmup=0, iters=1000, max_seconds=0.0, min_iters=3)
    assert len(t) == 3


def test_model_stage_result_fields():
    model = synthetic.random_model(TINY, "float32")
    r = bench.bench_model_stage(bench.mlx_model_stage(model), 2, impl="mlx", precision="float32", warmup=1, iters=3)
    assert r.stage == "model" and r.batch == 2 and len(r.times_ms) == 3 and r.note == ""
    assert set(FIELDS) <= set(r.stats) and r.items_per_s > 0
    d = r.to_dict()
    assert d["iters"] == 3 and len(d["times_ms"]) == 3
    table = bench.format_table([r])
    assert "p99 ms" in table and "| model | mlx | float32 | 2 |" in table


def test_mlx_model_stage_returns_every_output_on_host():
    model = synthetic.random_model(TINY, "bfloat16")
    out = bench.mlx_model_stage(model)(synthetic.make_crops(1))
    assert set(out) >= {"vertices", "keypoints_3d", "cam", "betas", "global_orient", "hand_pose"}
    assert all(isinstance(v, np.ndarray) and np.isfinite(v).all() for v in out.values())
    assert out["vertices"].shape == (1, 778, 3)


def test_planted_detector_route_finds_the_hands():
    model = synthetic.random_model(TINY)
    det = synthetic.random_detector("float32", TINY_DET)
    pipe = bench.route_pipeline(model, det, 2)
    hands = pipe(synthetic.make_frame())
    got = sorted(np.round(h.box).tolist() for h in hands)
    want = sorted(np.round(b).tolist() for b in synthetic.hand_boxes(2))
    np.testing.assert_allclose(got, want, atol=1.0)
    r = bench.bench_route(pipe, 2, impl="mlx", precision="float32", warmup=0, iters=2)
    assert r.stage == "route" and r.batch == 2 and "model" in r.note


def test_model_cost_matches_vit_h():
    cost = roofline.model_cost(WiLoRConfig())
    # ViT-H/16 on 210 tokens: ~2 * 632M params * 210 ~ 2.7e11 FLOPs; RefineNet ~4 GFLOPs
    assert 2.6e11 < cost["vit"] < 2.8e11 and 3e9 < cost["refine_net"] < 5e9
    assert cost["total"] == pytest.approx(cost["vit"] + cost["refine_net"] + cost["mano"])


def test_floors_use_weights_and_flops():
    model = synthetic.random_model(TINY)
    f = roofline.floors(TINY, model, bandwidth_gbs=1.0, matmul_tflops=1.0, batch=4)
    assert f["bytes_ms"] == pytest.approx(roofline.weight_bytes(model) / 1e9 * 1e3)
    assert f["flops_ms"] == pytest.approx(4 * roofline.model_cost(TINY)["total"] / 1e12 * 1e3)


def test_random_model_rejects_unknown_precision():
    with pytest.raises(ValueError, match="dtype must be one of"):
        synthetic.random_model(TINY, "float64")


def test_cli_bench_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "--size", "tiny", "--stage", "all", "-b", "1", "--hands", "1", "-p", "float32",
               "--iters", "2", "--warmup", "0", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mlx " + mx.__version__ in text and "| model | mlx | float32 | 1 |" in text
    assert "| route | mlx | float32 | 1 |" in text
    data = json.loads(out.read_text())
    assert {r["stage"] for r in data["results"]} == {"model", "route"}
    assert all(set(FIELDS) <= set(r) for r in data["results"])


def test_cli_bench_cpu_defaults_are_short(capsys):
    # on a CPU: float32, one crop, a few calls (about a minute at full size)
    assert main(["bench", "--size", "tiny"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| model |")]
    if mx.default_device().type == mx.DeviceType.cpu:
        assert {r.split("|")[3].strip() for r in rows} == {"float32"} and {r.split("|")[4].strip() for r in rows} == {"1"}


def test_format_table_shows_slow_rates():
    r = bench.Result("model", "mlx", "float32", 1, "cpu", np.array([2300.0, 2400.0]))
    assert "| 0.43 |" in bench.format_table([r])


def test_cpu_blas_probe():
    assert cpu_gemm_gflops(n=64, repeats=1) > 0
    found = find_openblas()
    assert found is None or isinstance(found, str)


# ---------------------------------------------------------------- the speed paths equal the plain ones


def _tree_reference(R, J, parents):
    """World rotations and posed joints by walking the tree joint by joint (float64 numpy)."""
    R, J = np.asarray(R, np.float64), np.asarray(J, np.float64)
    Rw, tw = np.zeros_like(R), np.zeros_like(J)
    for j, p in enumerate(parents):
        if p < 0:
            Rw[:, j], tw[:, j] = R[:, j], J[:, j]
        else:
            Rw[:, j] = Rw[:, p] @ R[:, j]
            tw[:, j] = tw[:, p] + (Rw[:, p] @ (J[:, j] - J[:, p])[..., None])[..., 0]
    return Rw, tw


@pytest.mark.parametrize("parents", [
    (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14),  # MANO: the chain fast path
    (-1, 0, 1, 0, 3, 1),  # depth order differs from joint order: the generic path with its reordering
])
def test_kinematic_chain_paths_match_tree_walk(parents):
    from mlx_hands.models.geometry import axis_angle_to_rotmat
    from mlx_hands.models.lbs import _world, chain_layout

    assert (chain_layout(parents) is not None) == (len(parents) == 16)
    rng = np.random.default_rng(0)
    B, J = 3, len(parents)
    R = axis_angle_to_rotmat(mx.array(rng.normal(0, 0.8, (B, J, 3)).astype(np.float32)))
    joints = rng.normal(0, 0.05, (B, J, 3)).astype(np.float32)
    Rw, tw = _world(R, mx.array(joints), parents)
    R_ref, t_ref = _tree_reference(np.array(R), joints, parents)
    np.testing.assert_allclose(np.array(Rw), R_ref, atol=1e-6)
    np.testing.assert_allclose(np.array(tw), t_ref, atol=1e-7)


@pytest.mark.parametrize("shape", [(2, 5, 4, 6, 3), (1, 3, 7, 8, 16)])
def test_conv_transpose_as_gemm_matches_mlx(shape):
    import mlx.nn as nn

    from mlx_hands.models.refinenet import _is_up2, conv_transpose_up2

    B, H, W, Ci, Co = shape
    mx.random.seed(1)
    layer = nn.ConvTranspose2d(Ci, Co, 4, stride=2, padding=1, bias=False)
    x = mx.random.normal((B, H, W, Ci))
    assert _is_up2(layer)
    np.testing.assert_allclose(np.array(conv_transpose_up2(x, layer.weight)), np.array(layer(x)), atol=1e-5)


def test_refinenet_deconv_gemm_switch_keeps_output():
    model = synthetic.random_model(TINY)
    crops = mx.array(synthetic.make_crops(2))
    model.refine_net.deconv.deconv_gemm = False
    a = model(crops)
    model.refine_net.deconv.deconv_gemm = True
    b = model(crops)
    np.testing.assert_allclose(np.array(a.vertices), np.array(b.vertices), atol=1e-6)


def test_add_layer_norm_fallback_is_add_then_layer_norm():
    from mlx_hands.models.kernels import add_layer_norm

    x, y = mx.random.normal((2, 7, 32)), mx.random.normal((2, 7, 32))
    w, b = mx.random.normal((32,)), mx.random.normal((32,))
    s, n = add_layer_norm(x, y, w, b, 1e-6, fused=False)
    np.testing.assert_allclose(np.array(s), np.array(x + y), atol=0)
    ref = (np.array(x + y) - np.array(x + y).mean(-1, keepdims=True)) / np.sqrt(np.array(x + y).var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.array(n), ref * np.array(w) + np.array(b), atol=1e-4)
