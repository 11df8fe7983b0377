"""Export round trips: OBJ / PLY / GLB parse back to the same mesh, left winding reversed, JSON / NPZ schema."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from mlx_hands import export
from test_render import faces, make_hand


def _hands():
    return [make_hand(True, track_id=3), make_hand(False, centre=(400, 200), depth=20.0)]


def _camera_mesh(hand):
    return hand.vertices + hand.cam_t


def read_obj(path):
    v, f = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            v.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("f "):
            f.append([int(x.split("/")[0]) - 1 for x in line.split()[1:4]])
    return np.array(v), np.array(f)


def read_ply(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    nv = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    nf = int(next(h for h in header if h.startswith("element face")).split()[-1])
    body = data[end:]
    if "format binary_little_endian 1.0" in header:
        v = np.frombuffer(body[: nv * 12], "<f4").reshape(nv, 3)
        rec = np.frombuffer(body[nv * 12 :], dtype=[("n", "u1"), ("i", "<i4", (3,))], count=nf)
        assert np.all(rec["n"] == 3)
        return v.astype(np.float64), rec["i"].astype(np.int64)
    rows = body.decode("ascii").split("\n")
    v = np.array([[float(x) for x in r.split()] for r in rows[:nv]])
    f = np.array([[int(x) for x in r.split()] for r in rows[nv : nv + nf]])
    assert np.all(f[:, 0] == 3)
    return v, f[:, 1:]


def read_glb(path):
    data = path.read_bytes()
    magic, version, total = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and version == 2 and total == len(data)
    jlen, jtype = struct.unpack_from("<II", data, 12)
    assert jtype == 0x4E4F534A and jlen % 4 == 0
    doc = json.loads(data[20 : 20 + jlen])
    blen, btype = struct.unpack_from("<II", data, 20 + jlen)
    assert btype == 0x004E4942 and blen % 4 == 0
    blob = data[28 + jlen : 28 + jlen + blen]
    assert doc["buffers"][0]["byteLength"] <= blen

    def accessor(i):
        a = doc["accessors"][i]
        view = doc["bufferViews"][a["bufferView"]]
        dtype = {5126: "<f4", 5125: "<u4"}[a["componentType"]]
        width = {"SCALAR": 1, "VEC3": 3}[a["type"]]
        arr = np.frombuffer(blob, dtype, a["count"] * width, view["byteOffset"])
        assert arr.nbytes <= view["byteLength"] and view["byteOffset"] % 4 == 0
        return arr.reshape(a["count"], width) if width > 1 else arr

    return doc, accessor


def test_obj_round_trip_and_winding(tmp_path):
    hands = _hands()
    for hand in hands:
        path = export.write_obj(tmp_path / f"{hand.side}.obj", hand, faces())
        v, f = read_obj(path)
        np.testing.assert_allclose(v, _camera_mesh(hand), atol=1e-6)
        expected = faces() if hand.is_right else faces()[:, [0, 2, 1]]
        np.testing.assert_array_equal(f, expected)
    v, _ = read_obj(export.write_obj(tmp_path / "local.obj", hands[0], faces(), camera_space=False))
    np.testing.assert_allclose(v, hands[0].vertices, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip_and_winding(tmp_path, binary):
    for hand in _hands():
        v, f = read_ply(export.write_ply(tmp_path / f"{hand.side}.ply", hand, faces(), binary=binary))
        np.testing.assert_allclose(v, _camera_mesh(hand), rtol=1e-6, atol=2e-6)
        expected = faces() if hand.is_right else faces()[:, [0, 2, 1]]
        np.testing.assert_array_equal(f, expected)


def _signed_volume(v, f):
    t = v[f]
    return np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6


def test_exported_left_mesh_is_not_inside_out(tmp_path):
    # Mirrored (left) mesh + reversed winding: outward normals, i.e. positive enclosed volume, like the right.
    for hand in _hands():
        v, f = read_obj(export.write_obj(tmp_path / "m.obj", hand, faces()))
        assert _signed_volume(v - v.mean(0), f) > 5e-5, hand.side


def test_json_schema_and_units(tmp_path):
    hands = _hands()
    hands[0].extra["raw"] = {"cam_t": np.zeros(3)}
    hands[0].extra["note"] = np.float32(1.5)
    path = export.write_json(tmp_path / "sub" / "r.json", hands, image_size=(640, 480), source="img.jpg")
    doc = json.loads(path.read_text())
    assert doc["schema"] == export.SCHEMA and (doc["width"], doc["height"]) == (640, 480) and doc["image"] == "img.jpg"
    for key in ("keypoints_2d", "keypoints_3d", "vertices", "cam_t", "box"):
        assert key in doc["units"]
    assert "pixels" in doc["units"]["keypoints_2d"] and "metres" in doc["units"]["keypoints_3d"]
    right, left = doc["hands"]
    assert right["side"] == "right" and left["side"] == "left" and right["track_id"] == 3 and "track_id" not in left
    expected = {"side", "is_right", "confidence", "box", "keypoints_2d", "keypoints_3d", "cam_t", "focal_length",
                "global_orient", "hand_pose", "betas", "crop_cam", "vertices"}
    assert expected <= set(right)
    assert np.shape(right["keypoints_2d"]) == (21, 2) and np.shape(right["vertices"]) == (778, 3)
    assert right["extra"] == {"note": 1.5}  # the tracker's raw values stay out unless asked for
    back = export.from_json_dict(right)
    np.testing.assert_allclose(back.keypoints_2d, hands[0].keypoints_2d, atol=1e-6)
    np.testing.assert_allclose(back.vertices, hands[0].vertices, atol=1e-6)
    assert back.is_right and back.track_id == 3
    slim = export.to_json_dict(hands[0], include_vertices=False, include_raw=True)
    assert "vertices" not in slim and slim["extra"]["raw"]["cam_t"] == [0.0, 0.0, 0.0]
    json.dumps(slim)


def test_npz_round_trip(tmp_path):
    hands = _hands()
    with np.load(export.write_npz(tmp_path / "r.npz", hands, faces())) as z:
        assert z["is_right"].tolist() == [True, False] and z["track_id"].tolist() == [3, -1]
        assert z["vertices"].shape == (2, 778, 3) and z["keypoints_2d"].shape == (2, 21, 2)
        np.testing.assert_allclose(z["cam_t"][1], hands[1].cam_t, rtol=1e-6)
        np.testing.assert_array_equal(z["faces"], faces())
    with np.load(export.write_npz(tmp_path / "empty.npz", [])) as z:
        assert z["keypoints_3d"].shape == (0, 21, 3) and "vertices" not in z


def test_glb_single_and_clip(tmp_path):
    hands = _hands()
    doc, acc = read_glb(export.write_glb(tmp_path / "one.glb", [hands], faces()))
    assert len(doc["nodes"]) == 2 and "animations" not in doc
    for node, hand in zip(doc["nodes"], hands, strict=True):
        prim = doc["meshes"][node["mesh"]]["primitives"][0]
        pos = acc(prim["attributes"]["POSITION"])
        np.testing.assert_allclose(pos, _camera_mesh(hand) * [1, -1, -1], rtol=1e-6, atol=2e-6)
        idx = acc(prim["indices"]).reshape(-1, 3)
        np.testing.assert_array_equal(idx, faces() if hand.is_right else faces()[:, [0, 2, 1]])
        a = doc["accessors"][prim["attributes"]["POSITION"]]
        np.testing.assert_allclose(a["min"], pos.min(0), rtol=1e-6)
    frames = [[make_hand(True, centre=(300 + 10 * k, 240), track_id=0)] for k in range(4)]
    frames[2] = []  # a frame without hands
    doc, acc = read_glb(export.write_glb(tmp_path / "clip.glb", frames, faces(), fps=10))
    assert len(doc["nodes"]) == 3
    anim = doc["animations"][0]
    assert len(anim["channels"]) == 3
    # the third node (frame 3) is shown from t = 0.3 s on and hidden before
    s = anim["samplers"][anim["channels"][2]["sampler"]]
    np.testing.assert_allclose(acc(s["input"]), [0.0, 0.3], atol=1e-6)
    np.testing.assert_allclose(acc(s["output"])[:, 0], [0.0, 1.0])
    with pytest.raises(ValueError, match="increasing"):
        export.write_glb(tmp_path / "bad.glb", frames, faces(), times=[0, 1, 1, 2])


def test_export_hands_writes_everything(tmp_path):
    paths = export.export_hands(tmp_path / "out", "img", _hands(), faces(), formats=export.FORMATS, image_size=(640, 480))
    names = sorted(p.name for p in paths)
    assert names == ["img.glb", "img.json", "img.npz", "img_0_right.obj", "img_0_right.ply", "img_1_left.obj", "img_1_left.ply"]
    assert all(p.stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError, match="unknown export format"):
        export.export_hands(tmp_path, "x", [], faces(), formats=["fbx"])
    with pytest.raises(ValueError, match="faces"):
        export.export_hands(tmp_path, "x", [], None, formats=["obj"])


def test_unwritable_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="cannot create output folder .*file.txt"):
        export.write_json(blocker / "sub" / "r.json", _hands())
    with pytest.raises(OSError, match="file.txt"):
        export.export_hands(blocker, "img", _hands(), faces())


def test_mesh_export_without_vertices_is_clear(tmp_path):
    hand = make_hand(True)
    hand.vertices = None
    with pytest.raises(ValueError, match="no mesh vertices"):
        export.write_obj(tmp_path / "x.obj", hand, faces())
    with pytest.raises(ValueError, match="faces must be"):
        export.write_obj(tmp_path / "x.obj", make_hand(True), faces() + 1000)
