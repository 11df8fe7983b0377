import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mlx_hands.convert.mano import read_mano, read_mano_mean_params
from mlx_hands.weights import MANO_KEYS, load_mano, save_mano
from synth import FINGERTIP_IDS, MANO_PARENTS, make_mano, mano_release_dict, write_mano_pkl

SHARED = Path(__file__).resolve().parent / "fixtures"  # the synthetic MANO-format sample (not MANO data)

SHAPES = {"v_template": (778, 3), "shapedirs": (778, 3, 10), "posedirs": (135, 2334), "J_regressor": (16, 778),
          "lbs_weights": (778, 16), "parents": (16,), "faces": (1538, 3)}


@pytest.fixture(scope="module")
def mano():
    return make_mano()


def test_make_mano_layout(mano):
    assert set(mano) == set(MANO_KEYS)
    for k, shape in SHAPES.items():
        assert mano[k].shape == shape, k
        assert mano[k].dtype == (np.int32 if k in ("parents", "faces") else np.float32), k
    np.testing.assert_array_equal(mano["parents"], [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
    np.testing.assert_allclose(mano["J_regressor"].sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(mano["lbs_weights"].sum(1), 1.0, atol=1e-6)
    assert (mano["J_regressor"] >= 0).all() and (mano["lbs_weights"] >= 0).all()


def test_make_mano_is_a_hand(mano):
    v, f = mano["v_template"], mano["faces"]
    J = mano["J_regressor"] @ v
    assert 0.08 < np.ptp(v, axis=0).max() < 0.15  # metres
    assert f.min() >= 0 and f.max() == 777 and np.unique(f).size == 778
    # one oriented surface with a 16-edge wrist hole (F = 2V - 18, as MANO)
    edges = Counter((a, b) for tri in f for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])))
    assert max(edges.values()) == 1
    assert sum((b, a) not in edges for a, b in edges) == 16
    # fingertips at the MANO ids, at the far end of their chain, beyond the last joint
    chains = {"index": 3, "middle": 6, "pinky": 9, "ring": 12, "thumb": 15}
    for name, last in chains.items():
        tip = v[FINGERTIP_IDS[name]]
        d_tip = np.linalg.norm(tip - J[0])
        assert d_tip > np.linalg.norm(J[last] - J[0]) + 0.005, name
        follows = mano["lbs_weights"][FINGERTIP_IDS[name]]
        assert follows[last] == 1.0, name
    # each joint is driven by its own chain: vertices weighted to joint j sit between j and its child
    for j in range(1, 16):
        ids = np.nonzero(mano["lbs_weights"][:, j] > 0.99)[0]
        assert len(ids) >= 8, j
        children = np.nonzero(MANO_PARENTS == j)[0]
        if len(children):
            axis = J[children[0]] - J[j]
            t = (v[ids] - J[j]) @ axis / (axis @ axis)
            assert t.min() > -0.2 and t.max() < 1.2, j


def test_make_mano_deterministic_and_fast():
    t = time.perf_counter()
    a = make_mano(seed=3)
    elapsed = time.perf_counter() - t
    b, c = make_mano(seed=3), make_mano(seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["shapedirs"], c["shapedirs"])
    assert elapsed < 1.0  # budget 0.5 s; slack for a loaded CI machine


def test_release_pickle_round_trip(tmp_path, mano):
    p = write_mano_pkl(tmp_path / "MANO_RIGHT.pkl", mano)
    assert b"chumpy.ch\nCh" in p.read_bytes() and b"scipy.sparse.csc\ncsc_matrix" in p.read_bytes()
    out = read_mano(p)
    assert set(out) == set(MANO_KEYS)
    for k in MANO_KEYS:
        assert out[k].dtype == mano[k].dtype, k
        np.testing.assert_array_equal(out[k], mano[k], err_msg=k)


def test_npz_input(tmp_path, mano):
    rel = mano_release_dict(mano)
    np.savez(tmp_path / "release.npz", **{k: v for k, v in rel.items() if isinstance(v, np.ndarray)})
    np.savez(tmp_path / "canonical.npz", **mano)
    for name in ("release.npz", "canonical.npz"):
        out = read_mano(tmp_path / name)
        for k in MANO_KEYS:
            np.testing.assert_array_equal(out[k], mano[k], err_msg=f"{name}:{k}")


def test_posedirs_layout_matches_smplx(tmp_path, mano):
    # smplx: posedirs (V, 3, P) -> reshape(-1, P).T ; pose_feature (B, P) @ posedirs -> (B, V*3)
    rel = mano_release_dict(mano)
    feat = np.random.default_rng(0).normal(size=135)
    direct = np.einsum("vcp,p->vc", rel["posedirs"], feat)
    np.testing.assert_allclose((feat @ mano["posedirs"]).reshape(778, 3), direct, rtol=1e-5, atol=1e-9)


def test_safetensors_round_trip(tmp_path, mano):
    p = save_mano(mano, tmp_path / "mano.safetensors", source="/somewhere/MANO_RIGHT.pkl")
    out = load_mano(p)
    for k in MANO_KEYS:
        assert out[k].dtype == mano[k].dtype
        np.testing.assert_array_equal(out[k], mano[k])
    from safetensors import safe_open

    with safe_open(str(p), framework="numpy") as f:
        assert f.metadata() == {"format": "mlx-hands-mano", "source": "MANO_RIGHT.pkl"}


def test_load_mano_rejects_other_safetensors(tmp_path):
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "model.safetensors"), metadata={"format": "mlx"})
    with pytest.raises(ValueError, match="expected 'mlx-hands-mano'"):
        load_mano(tmp_path / "model.safetensors")


@pytest.mark.parametrize("key", ["weights", "kintree_table", "f", "J_regressor"])
def test_missing_release_key(tmp_path, mano, key):
    rel = {k: v for k, v in mano_release_dict(mano).items() if isinstance(v, np.ndarray) and k != key}
    np.savez(tmp_path / "bad.npz", **rel)
    with pytest.raises(ValueError, match=rf"bad\.npz.*missing MANO key.*'{key}'"):
        read_mano(tmp_path / "bad.npz")


@pytest.mark.parametrize("key,bad", [("shapedirs", (778, 3, 5)), ("posedirs", (778, 3, 130)),
                                      ("J_regressor", (16, 700)), ("weights", (778, 15)), ("f", (1538, 4))])
def test_wrong_release_shape(tmp_path, mano, key, bad):
    rel = {k: v for k, v in mano_release_dict(mano).items() if isinstance(v, np.ndarray)}
    rel[key] = np.zeros(bad)
    np.savez(tmp_path / "bad.npz", **rel)
    with pytest.raises(ValueError, match=rf"bad\.npz: MANO key '{key}' has shape \({bad[0]}, "):
        read_mano(tmp_path / "bad.npz")


def test_canonical_checks(tmp_path, mano):
    bad = dict(mano)
    bad["lbs_weights"] = mano["lbs_weights"][:, :15]
    with pytest.raises(ValueError, match=r"'lbs_weights' has shape \(778, 15\), expected \(778, 16\)"):
        save_mano(bad, tmp_path / "x.safetensors")
    bad = {k: v for k, v in mano.items() if k != "faces"}
    with pytest.raises(ValueError, match="missing MANO key.*'faces'"):
        save_mano(bad, tmp_path / "x.safetensors")
    bad = dict(mano)
    bad["parents"] = np.roll(mano["parents"], 1)
    with pytest.raises(ValueError, match="parents"):
        save_mano(bad, tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="MANO_LEFT.pkl"):
        read_mano(tmp_path / "MANO_LEFT.pkl")


def test_mean_params(tmp_path):
    rng = np.random.default_rng(0)
    ok = {"pose": rng.normal(size=96), "shape": rng.normal(size=10), "cam": np.array([0.9, 0.0, 0.0])}
    np.savez(tmp_path / "mean.npz", **ok)
    out = read_mano_mean_params(tmp_path / "mean.npz")
    assert set(out) == {"pose", "shape", "cam"}
    for k in ok:
        assert out[k].dtype == np.float32
        np.testing.assert_allclose(out[k], ok[k], rtol=1e-6)
    np.savez(tmp_path / "short.npz", pose=np.zeros(90), shape=np.zeros(10), cam=np.zeros(3))
    with pytest.raises(ValueError, match=r"'pose' has shape \(90,\), expected \(96,\)"):
        read_mano_mean_params(tmp_path / "short.npz")
    np.savez(tmp_path / "nocam.npz", pose=np.zeros(96), shape=np.zeros(10))
    with pytest.raises(ValueError, match="missing key 'cam'"):
        read_mano_mean_params(tmp_path / "nocam.npz")


def test_shared_sample_to_canonical():
    out = read_mano(SHARED / "mano_sample_py2_chumpy.pkl")
    ref = np.load(SHARED / "mano_sample_arrays.npz")
    np.testing.assert_array_equal(out["v_template"], ref["v_template"].astype(np.float32))
    np.testing.assert_array_equal(out["shapedirs"], ref["shapedirs"][:, :, :10].astype(np.float32))
    np.testing.assert_array_equal(out["posedirs"], ref["posedirs"].reshape(-1, 135).T.astype(np.float32))
    np.testing.assert_array_equal(out["J_regressor"], ref["J_regressor_dense"].astype(np.float32))
    np.testing.assert_array_equal(out["lbs_weights"], ref["weights"].astype(np.float32))
    np.testing.assert_array_equal(out["faces"], ref["f"].astype(np.int32))
    np.testing.assert_array_equal(out["parents"], MANO_PARENTS)
