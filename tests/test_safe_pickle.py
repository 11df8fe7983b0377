import collections
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mlx_hands.convert.safe_pickle import (
    CheckpointError,
    StandIn,
    UnsafePickleError,
    load_legacy_pickle,
    load_torch_file,
    module_state_dict,
)
from synth import global_call_pickle, write_malicious_pickle, write_torch_checkpoint

torch = pytest.importorskip("torch")

SHARED = Path(__file__).resolve().parent / "fixtures"  # the synthetic MANO-format sample (not MANO data)


def _memmap_backed(a: np.ndarray) -> bool:
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = getattr(a, "base", None)  # as_strided puts a small wrapper object in the chain
    return False


def test_tensor_round_trip(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(5, 12)
    obj = {
        "f32": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),
        "f16": torch.randn(7, generator=torch.Generator().manual_seed(1)).half(),
        "i64": torch.arange(-5, 5),
        "bool": torch.tensor([True, False, True]),
        "u8": torch.arange(10, dtype=torch.uint8),
        "f64": torch.tensor([1.5, -2.25], dtype=torch.float64),
        "transposed": base.t(),
        "stepped": base[1:, ::3],
        "narrow": base[2],  # storage offset into a shared storage
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "param": torch.nn.Parameter(torch.full((2, 2), 3.0)),
        "nested": {"list": [torch.ones(2), (torch.zeros(1), "x")], "od": collections.OrderedDict(a=torch.eye(2))},
        "dtype": torch.float16,
        "size": torch.Size([3, 4]),
        "device": torch.device("cpu"),
    }
    torch.save(obj, tmp_path / "t.pt")
    out = load_torch_file(tmp_path / "t.pt")

    def check(a, t):
        ref = t.detach().numpy()
        assert isinstance(a, np.ndarray) and a.dtype == ref.dtype and a.shape == ref.shape
        np.testing.assert_array_equal(a, ref)

    for k in ("f32", "f16", "i64", "bool", "u8", "f64", "transposed", "stepped", "narrow", "scalar", "empty", "param"):
        check(out[k], obj[k])
    check(out["nested"]["list"][0], obj["nested"]["list"][0])
    check(out["nested"]["list"][1][0], obj["nested"]["list"][1][0])
    assert out["nested"]["list"][1][1] == "x"
    assert isinstance(out["nested"]["od"], collections.OrderedDict)
    check(out["nested"]["od"]["a"], obj["nested"]["od"]["a"])
    assert out["transposed"].strides == (4, 48)  # torch's strides, in bytes
    assert np.shares_memory(out["transposed"], out["narrow"])  # one storage, one buffer
    assert out["dtype"] == "torch.float16" and out["size"] == (3, 4) and out["device"] == "cpu"


def test_bfloat16_becomes_float32(tmp_path):
    t = torch.tensor([1.0, -2.5, 3.140625, 1e-3], dtype=torch.bfloat16)
    torch.save({"w": t}, tmp_path / "b.pt")
    w = load_torch_file(tmp_path / "b.pt")["w"]
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, t.float().numpy())


def test_lightning_checkpoint_is_lazy_and_has_metadata(tmp_path):
    rng = np.random.default_rng(0)
    sd = {"backbone.blocks.0.attn.qkv.weight": rng.normal(size=(48, 16)).astype(np.float32),
          "backbone.blocks.0.norm.bias": rng.normal(size=16).astype(np.float16),
          "counter": np.arange(3, dtype=np.int64)}
    p = write_torch_checkpoint(tmp_path / "w.ckpt", sd)
    ckpt = load_torch_file(p)
    state = ckpt["state_dict"]
    assert list(state) == list(sd)
    for k, v in sd.items():
        assert state[k].dtype == v.dtype
        np.testing.assert_array_equal(state[k], v)
        assert _memmap_backed(state[k]) and not state[k].flags.writeable
    assert ckpt["epoch"] == 3 and ckpt["pytorch-lightning_version"].startswith("2.")
    cfg = ckpt["hyper_parameters"]["cfg"]
    assert isinstance(cfg, StandIn) and type(cfg)._standin_path == "yacs.config.CfgNode"
    assert cfg["MODEL"]["IMAGE_SIZE"] == 256 and cfg.MODEL.IMAGE_SIZE == 256 and "MANO" in cfg
    assert set(dict(cfg)) == {"MODEL", "MANO"}
    moments = ckpt["optimizer_states"][0]["state"][0]
    np.testing.assert_array_equal(moments["exp_avg_sq"], np.ones((48, 16), np.float32))


def _fake_ultralytics(monkeypatch):
    nn = torch.nn
    mod = types.ModuleType("ultralytics.nn.modules")
    for name in ("ultralytics", "ultralytics.nn"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "ultralytics.nn.modules", mod)

    class Conv(nn.Module):
        def __init__(self, c1, c2):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, 3, bias=False)
            self.bn = nn.BatchNorm2d(c2)
            self.act = nn.SiLU()
            self.register_buffer("scratch", torch.ones(2), persistent=False)

    class PoseModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(Conv(3, 4), Conv(4, 8))
            self.head = nn.Linear(8, 2)
            self.register_parameter("unused", None)
            self.aux = None
            self.yaml = {"nc": 2, "kpt_shape": [21, 3]}

    for c in (Conv, PoseModel):
        c.__module__ = "ultralytics.nn.modules"
        c.__qualname__ = c.__name__
        setattr(mod, c.__name__, c)
    return PoseModel


def test_stand_in_module_tree(tmp_path, monkeypatch):
    PoseModel = _fake_ultralytics(monkeypatch)
    torch.manual_seed(0)
    net = PoseModel()
    net.model[0].bn.running_mean.uniform_()
    net = net.half()
    torch.save({"model": net, "train_args": {"imgsz": 640}, "date": "2024"}, tmp_path / "detector.pt")

    with pytest.raises(UnsafePickleError, match="ultralytics.nn.modules.PoseModel"):
        load_torch_file(tmp_path / "detector.pt")
    obj = load_torch_file(tmp_path / "detector.pt", stand_ins=("ultralytics.", "torch.nn.modules."))
    model = obj["model"]
    assert type(model)._standin_path == "ultralytics.nn.modules.PoseModel"
    assert model.yaml["kpt_shape"] == [21, 3]
    got, ref = module_state_dict(model), net.state_dict()
    assert list(got) == list(ref)  # same names, same order, no None / non-persistent entries
    for k in ref:
        assert got[k].dtype == ref[k].numpy().dtype
        np.testing.assert_array_equal(got[k], ref[k].numpy())
    assert "model.0.bn.running_mean" in got and "model.0.scratch" not in got
    assert list(module_state_dict(model.model, prefix="m.")) == ["m." + k for k in net.model.state_dict()]
    with pytest.raises(TypeError, match="not a pickled nn.Module"):
        module_state_dict(obj["train_args"])


def test_legacy_torch_format(tmp_path):
    sd = collections.OrderedDict(w=torch.arange(12.0).reshape(3, 4), b=torch.arange(3), h=torch.ones(2).half())
    sd["view"] = sd["w"][:, 1]
    torch.save({"state_dict": sd}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(tmp_path / "old.pt")
    out = load_torch_file(tmp_path / "old.pt")["state_dict"]
    for k, v in sd.items():
        assert out[k].dtype == v.numpy().dtype
        np.testing.assert_array_equal(out[k], v.numpy())


# ---- bad and hostile files


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "random.ckpt"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"random\.ckpt.*not a PyTorch checkpoint \(zip\)"):
        load_torch_file(p)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_torch_file(tmp_path / "nope.ckpt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_torch_file(tmp_path / "empty.pt")


def test_truncated_checkpoint(tmp_path):
    p = write_torch_checkpoint(tmp_path / "w.ckpt", {"a": np.ones((64, 64), np.float32)})
    data = p.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.ckpt"):
        load_torch_file(cut)


def test_missing_storage_member(tmp_path):
    src = write_torch_checkpoint(tmp_path / "w.ckpt", {"a": np.ones(3, np.float32)})
    dst = tmp_path / "gap.ckpt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            if not info.filename.endswith("/data/0"):
                zout.writestr(info.filename, zin.read(info.filename))
    with pytest.raises(CheckpointError, match=r"gap\.ckpt.*truncated: storage data/0 missing"):
        load_torch_file(dst)


def test_malicious_checkpoint_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    plain = write_malicious_pickle(tmp_path / "evil.pkl", marker)
    pickle.loads(plain.read_bytes())  # control: the payload is real
    assert marker.exists()
    marker.unlink()

    ckpt = write_malicious_pickle(tmp_path / "evil.ckpt", marker, zip_checkpoint=True)
    with pytest.raises(UnsafePickleError, match=r"evil\.ckpt.*(posix|os|nt)\.system"):
        load_torch_file(ckpt)
    with pytest.raises(UnsafePickleError, match=r"(posix|os|nt)\.system"):
        load_legacy_pickle(plain)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("builtins", "eval"),
                                         ("builtins", "exec"),
                                         ("subprocess", "Popen"), ("torch.storage", "_load_from_bytes")])
def test_refuses_code_globals(tmp_path, module, name):
    marker = tmp_path / "ran"
    payload = global_call_pickle(module, name, f"touch {marker}")
    with zipfile.ZipFile(tmp_path / "x.pt", "w") as zf:
        zf.writestr("archive/data.pkl", payload)
    with pytest.raises(UnsafePickleError, match=rf"x\.pt.*{module}\.{name}"):
        load_torch_file(tmp_path / "x.pt")
    (tmp_path / "x.pkl").write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=rf"{module}\.{name}"):
        load_legacy_pickle(tmp_path / "x.pkl")
    assert not marker.exists()


def test_getattr_only_on_stand_ins(tmp_path):
    # ultralytics' Pose head pickles `self.detect = Detect.forward` as getattr(Detect, "forward")
    def payload(owner_module, owner):
        return (b"\x80\x02c__builtin__\ngetattr\nc" + owner_module.encode() + b"\n" + owner.encode()
                + b"\nX\x07\x00\x00\x00forwardq\x00\x86R.")

    for module, name in (("__builtin__", "str"), ("collections", "OrderedDict")):
        (tmp_path / "x.pkl").write_bytes(payload(module, name))
        with pytest.raises(UnsafePickleError, match="getattr"):
            load_legacy_pickle(tmp_path / "x.pkl")
    with zipfile.ZipFile(tmp_path / "m.pt", "w") as zf:
        zf.writestr("archive/data.pkl", payload("ultralytics.nn.modules.head", "Detect"))
    got = load_torch_file(tmp_path / "m.pt", stand_ins=("ultralytics.",))
    assert repr(got) == "<InertAttribute ultralytics.nn.modules.head.Detect.forward>"


def test_stand_ins_stay_inert(tmp_path):
    # even a dangerous name given as a stand-in only produces a record
    marker = tmp_path / "ran"
    with zipfile.ZipFile(tmp_path / "x.pt", "w") as zf:
        zf.writestr("archive/data.pkl", global_call_pickle("os", "system", f"touch {marker}"))
    obj = load_torch_file(tmp_path / "x.pt", stand_ins=("",))
    assert isinstance(obj, StandIn) and obj._standin_args == (f"touch {marker}",)
    assert not marker.exists()


# ---- Python 2 release pickles


def test_scipy_sparse_and_numpy_from_python3(tmp_path):
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(6, 9)) * (rng.random((6, 9)) < 0.3)
    obj = {"csc": sparse.csc_matrix(dense), "csr": sparse.csr_matrix(dense), "arr": np.arange(6).reshape(2, 3),
           "f32": np.float32(1.5), "s": {1, 2}}
    (tmp_path / "s.pkl").write_bytes(pickle.dumps(obj, protocol=2))
    out = load_legacy_pickle(tmp_path / "s.pkl")
    np.testing.assert_array_equal(out["csc"], dense)
    np.testing.assert_array_equal(out["csr"], dense)
    np.testing.assert_array_equal(out["arr"], obj["arr"])
    assert out["f32"] == np.float32(1.5) and out["s"] == {1, 2}


def test_unknown_chumpy_class_is_refused(tmp_path):
    payload = b"\x80\x02}q\x00U\x01aq\x01cchumpy.reordering\nSelect\nq\x02)\x81q\x03}q\x04bs."
    (tmp_path / "c.pkl").write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="chumpy.reordering.Select is not supported"):
        load_legacy_pickle(tmp_path / "c.pkl")


def test_shared_py2_chumpy_sample():
    out = load_legacy_pickle(SHARED / "mano_sample_py2_chumpy.pkl")
    ref = np.load(SHARED / "mano_sample_arrays.npz")
    for k in ("v_template", "shapedirs", "posedirs", "weights", "kintree_table", "f", "hands_components",
              "hands_mean", "hands_coeffs", "J"):
        assert out[k].dtype == ref[k].dtype and out[k].shape == ref[k].shape, k
        np.testing.assert_array_equal(out[k], ref[k])
    np.testing.assert_array_equal(out["J_regressor"], ref["J_regressor_dense"])
    assert out["bs_style"] == "lbs" and out["bs_type"] == "lrotmin"


def test_numpy_values_in_a_torch_file(tmp_path):
    obj = {"scalar": np.float64(2.5), "arr": np.arange(6.0).reshape(2, 3), "big": np.array([1, 2], dtype=">i4"),
           "rec": np.array([(1.5, 2)], dtype=[("a", "<f4"), ("b", "<i2")]), "i32": np.int32(7)}
    torch.save(obj, tmp_path / "np.pt")
    out = load_torch_file(tmp_path / "np.pt")
    for k, v in obj.items():
        assert out[k].dtype == pickle.loads(pickle.dumps(v, protocol=2)).dtype, k  # as numpy itself unpickles
        np.testing.assert_array_equal(out[k], v)
    assert np.dtype("i4").byteorder == "="  # numpy's own dtype singletons are untouched
