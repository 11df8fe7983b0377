"""Smoke tests of the benchmark harness on a tiny model (no timing assertions)."""

import json

import mlx.core as mx
import numpy as np
import pytest

from mlx_hands import bench
from mlx_hands.blas import cpu_gemm_gflops, find_openblas
from mlx_hands.cli import main
from mlx_hands.config import DetectorConfig, RefineNetConfig, ViTConfig, WiLoRConfig

TINY = WiLoRConfig(vit=ViTConfig(dim=64, depth=2, num_heads=4), refine_net=RefineNetConfig(feat_dim=64))
TINY_DET = DetectorConfig(width=0.25, depth=0.33, max_channels=64)
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
    model = bench.random_model(TINY, "float32")
    r = bench.bench_model_stage(bench.mlx_model_stage(model), 2, impl="mlx", precision="float32", warmup=1, iters=3)
    assert r.stage == "model" and r.batch == 2 and len(r.times_ms) == 3 and r.note == ""
    assert set(FIELDS) <= set(r.stats) and r.items_per_s > 0
    d = r.to_dict()
    assert d["iters"] == 3 and len(d["times_ms"]) == 3
    table = bench.format_table([r])
    assert "p99 ms" in table and "| model | mlx | float32 | 2 |" in table


def test_mlx_model_stage_returns_every_output_on_host():
    model = bench.random_model(TINY, "bfloat16")
    out = bench.mlx_model_stage(model)(bench.make_crops(1))
    assert set(out) >= {"vertices", "keypoints_3d", "cam", "betas", "global_orient", "hand_pose"}
    assert all(isinstance(v, np.ndarray) and np.isfinite(v).all() for v in out.values())
    assert out["vertices"].shape == (1, 778, 3)


def test_planted_detector_route_finds_the_hands():
    model = bench.random_model(TINY)
    det = bench.random_detector("float32", TINY_DET)
    pipe = bench.route_pipeline(model, det, 2)
    hands = pipe(bench.make_frame())
    got = sorted(np.round(h.box).tolist() for h in hands)
    want = sorted(np.round(b).tolist() for b in bench.hand_boxes(2))
    np.testing.assert_allclose(got, want, atol=1.0)
    r = bench.bench_route(pipe, 2, impl="mlx", precision="float32", warmup=0, iters=2)
    assert r.stage == "route" and r.batch == 2 and "model" in r.note


def test_model_cost_matches_vit_h():
    cost = bench.model_cost(WiLoRConfig())
    # ViT-H/16 on 210 tokens: ~2 * 632M params * 210 ~ 2.7e11 FLOPs; RefineNet ~4 GFLOPs
    assert 2.6e11 < cost["vit"] < 2.8e11 and 3e9 < cost["refine_net"] < 5e9
    assert cost["total"] == pytest.approx(cost["vit"] + cost["refine_net"] + cost["mano"])


def test_floors_use_weights_and_flops():
    model = bench.random_model(TINY)
    f = bench.floors(TINY, model, bandwidth_gbs=1.0, matmul_tflops=1.0, batch=4)
    assert f["bytes_ms"] == pytest.approx(bench.weight_bytes(model) / 1e9 * 1e3)
    assert f["flops_ms"] == pytest.approx(4 * bench.model_cost(TINY)["total"] / 1e12 * 1e3)


def test_random_model_rejects_unknown_precision():
    with pytest.raises(ValueError, match="precision"):
        bench.random_model(TINY, "float64")


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


def test_cli_bench_rejects_missing_reference(tmp_path, capsys):
    rc = main(["bench", "--size", "tiny", "-b", "1", "--reference", str(tmp_path / "nope")])
    assert rc == 2 and "WiLoR-mini" in capsys.readouterr().err


def test_cpu_blas_probe():
    assert cpu_gemm_gflops(n=64, repeats=1) > 0
    found = find_openblas()
    assert found is None or isinstance(found, str)
