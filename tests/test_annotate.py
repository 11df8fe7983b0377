"""mlx-hands annotate: both engines give the same rows, SIGKILL + resume gives the uninterrupted rows, bad items
become failed rows, manifests, settings changes. A tiny random model (conf 0 so that it finds hands), real
Parquet, real Ray Data started here, and the real CLI in subprocesses (which load the system OpenBLAS first,
as Ray's actors do, so their numbers can be compared bit for bit)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import mlx_hands
from mlx_hands.annotate import read_hands, read_items
from mlx_hands.annotate.engine import annotate
from mlx_hands.annotate.inputs import expand_inputs, plan_parts
from mlx_hands.annotate.store import FolderBusy, Output, SettingsChanged
from mlx_hands.annotate.worker import ModelSpec, Settings
from mlx_hands.pipeline.images import truncation as incomplete

ROOT = Path(mlx_hands.__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
SETTINGS = ["--conf", "0", "--max-det", "2", "--batch-size", "2", "--images-per-part", "2", "--no-progress"]
SORT = [("source", "ascending"), ("frame", "ascending"), ("hand", "ascending")]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from synth import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"))


def write_video(path, n=10, codec="MJPG", seed=0):
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), 10.0, (160, 120))
    assert writer.isOpened()
    base = rng.integers(0, 255, (120, 160, 3)).astype(np.uint8)
    for i in range(n):
        writer.write(np.roll(base, 3 * i, axis=1))
    writer.release()
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 images (JPEG and PNG, one in a subfolder) and one 10-frame video."""
    d = tmp_path_factory.mktemp("data")
    (d / "photos" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(8):
        img = rng.integers(0, 255, (100 + 10 * i, 160, 3)).astype(np.uint8)
        name = f"photos/{'sub/' if i == 5 else ''}img{i}.{'png' if i % 3 == 0 else 'jpg'}"
        cv2.imwrite(str(d / name), img)
    write_video(d / "clip.avi")
    return d


def cli(*args, check=True, **kw):
    r = subprocess.run([sys.executable, "-m", "mlx_hands", "annotate", *map(str, args)], env=ENV,
                       capture_output=True, text=True, timeout=300, **kw)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def sorted_hands(out):
    return read_hands(out).sort_by(SORT)


def folder_hands(out):
    """The whole hands/ folder as any Parquet reader sees it (not only the parts with a commit marker)."""
    return pq.read_table(out / "hands").sort_by(SORT)


def item_rows(out):
    t = read_items(out)
    return sorted(zip(*(t.column(c).to_pylist() for c in ("source", "status", "frames", "hands", "error"))))


@pytest.fixture(scope="module")
def reference(tiny_model, dataset, tmp_path_factory):
    """An uninterrupted run of the CLI's local engine (which must not import Ray)."""
    out = tmp_path_factory.mktemp("ref") / "ann"
    args = [str(a) for a in (dataset / "photos", dataset / "clip.avi", "--out", out, "--model", tiny_model, *SETTINGS)]
    script = ("import sys; from mlx_hands.cli import main; rc = main(['annotate', *sys.argv[1:]]); "
              "print('ray imported' if 'ray' in sys.modules else 'no ray'); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", script, *args], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "9 items (9 done, 0 failed)" in r.stdout and "no ray" in r.stdout
    return out


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------------------------------------- pipeline
def test_predict_many_equals_pipe_per_image(tiny_model):
    from mlx_hands.pipeline.runner import HandPosePipeline

    pipe = HandPosePipeline.from_pretrained(tiny_model, conf=0.0, max_det=2)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, s).astype(np.uint8) for s in [(120, 160, 3), (200, 90, 3), (64, 64, 3)]]
    many = pipe.predict_many(images)
    assert set(pipe.last_timings) >= {"detect", "model", "total"}
    for hands, image in zip(many, images):
        one = pipe(image)
        assert len(hands) == len(one) == 2
        for a, b in zip(hands, one):
            assert a.is_right == b.is_right and a.confidence == b.confidence
            np.testing.assert_allclose(a.keypoints_2d, b.keypoints_2d, rtol=1e-5, atol=1e-3)
            np.testing.assert_allclose(a.vertices, b.vertices, rtol=1e-5, atol=1e-6)
    assert pipe.predict_many([]) == []


# ---------------------------------------------------------------------------------------------- the table
def test_rows_and_schema(reference, dataset):
    hands = read_hands(reference)
    assert hands.schema.field("keypoints_2d").type == pa.list_(pa.float32(), 42)
    assert hands.schema.field("keypoints_2d").metadata[b"shape"] == b"21,2"
    assert "vertices" not in hands.schema.names
    d = hands.to_pydict()
    images = [i for i, s in enumerate(d["source"]) if not s.endswith(".avi")]
    video = [i for i, s in enumerate(d["source"]) if s.endswith(".avi")]
    assert len(images) == 8 * 2 and len(video) == 10 * 2  # max_det 2, conf 0: two hands in every frame
    assert all(d["track_id"][i] is None and d["time"][i] is None and d["frame"][i] == 0 for i in images)
    assert all(d["track_id"][i] is not None for i in video)
    assert sorted({(d["frame"][i], d["hand"][i]) for i in video}) == [(f, h) for f in range(10) for h in range(2)]
    assert {d["time"][i] for i in video} == {f / 10 for f in range(10)}
    assert sorted(set(d["source"])) == sorted([str(dataset / "clip.avi")] + [
        os.path.join(str(dataset / "photos"), p) for p in ["img0.png", "img1.jpg", "img2.jpg", "img3.png", "img4.jpg",
                                                            "sub/img5.jpg", "img6.png", "img7.jpg"]])
    arrays = mlx_hands.annotate.to_numpy(hands)
    assert arrays["keypoints_2d"].shape == (36, 21, 2) and arrays["hand_pose"].shape == (36, 15, 3)
    assert np.isfinite(arrays["keypoints_3d"]).all()
    items = read_items(reference).to_pydict()
    assert set(items["status"]) == {"done"} and sum(items["hands"]) == 36
    video_row = items["source"].index(str(dataset / "clip.avi"))
    assert items["frames"][video_row] == 10 and items["video_frames"][video_row] == 10 and items["fps"][video_row] == 10
    run = json.loads((reference / "run.json").read_text())
    assert run["settings"]["conf"] == 0 and json.loads(items["settings"][0]) == run["settings"]
    assert json.loads(items["model"][0]) == run["model"]


def test_both_engines_give_the_same_rows(reference, tiny_model, dataset, ray_session, tmp_path):
    out = tmp_path / "ann"
    summary = annotate([str(dataset / "photos"), str(dataset / "clip.avi")], out, engine="ray", workers=2,
                       spec=ModelSpec(str(tiny_model)), settings=Settings(conf=0.0, max_det=2), batch_size=2,
                       images_per_part=2, progress=False)
    assert (summary.done, summary.failed, summary.hands) == (9, 0, 36)
    assert sorted_hands(out).equals(sorted_hands(reference))  # bit for bit
    assert item_rows(out) == item_rows(reference)
    workers = {w.split()[0] for w in read_items(out).column("worker").to_pylist()}
    assert f"{socket.gethostname()}:{os.getpid()}" not in workers  # the actors committed, not this driver


def test_ray_actor_killed_mid_run_is_restarted_and_nothing_is_lost(reference, tiny_model, dataset, ray_session,
                                                                    tmp_path):
    out = tmp_path / "ann"
    result = {}

    def run():
        result["summary"] = annotate([str(dataset / "photos"), str(dataset / "clip.avi")], out, engine="ray",
                                     spec=ModelSpec(str(tiny_model)), settings=Settings(conf=0.0, max_det=2),
                                     batch_size=2, images_per_part=2, progress=False)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not any((out / "items").glob("part-*.parquet")) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    first = next((out / "items").glob("part-*.parquet"))
    host_pid = pq.read_table(first, columns=["worker"]).column("worker")[0].as_py().split()[0]
    os.kill(int(host_pid.rsplit(":", 1)[1]), signal.SIGKILL)  # the actor process, as a pre-empted worker
    thread.join(timeout=300)
    assert result["summary"].failed == 0
    workers = {w.split()[0] for w in read_items(out).column("worker").to_pylist()}
    # a restarted actor finished the run (and may have redone the killed one's last part: the same files)
    assert workers - {host_pid}, workers
    assert sorted_hands(out).equals(sorted_hands(reference))
    assert folder_hands(out).equals(folder_hands(reference))
    assert item_rows(out) == item_rows(reference)


def _kill_part_workers(stop: threading.Event, killed: list) -> None:
    """SIGKILL every Ray Data actor process while it runs a part (process title `ray::MapWorker(...).submit`),
    as a part that crashes its worker in native code would."""
    while not stop.is_set():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                title = cmdline.read_bytes().split(b"\0")[0].decode(errors="replace")
                if "MapWorker(MapBatches(RayAnnotator)).submit" in title:
                    os.kill(int(cmdline.parent.name), signal.SIGKILL)
                    killed.append(title)
            except (OSError, ValueError):
                continue
        time.sleep(0.01)


def test_a_part_that_keeps_killing_its_worker_stops_the_run_in_one_error(reference, tiny_model, dataset,
                                                                       ray_session, tmp_path):
    """Ray Data retries a task whose actor died without limit; here a part is tried PART_ATTEMPTS times, then
    the run stops with one error, and the same command resumes once the cause is gone."""
    from mlx_hands.annotate.ray_engine import PART_ATTEMPTS

    out = tmp_path / "ann"
    kwargs = dict(engine="ray", spec=ModelSpec(str(tiny_model)), settings=Settings(conf=0.0, max_det=2),
                  batch_size=2, images_per_part=2, progress=False)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_part_workers, args=(stop, killed))
    killer.start()
    t = time.monotonic()
    try:
        with pytest.raises(ValueError) as e:
            annotate([str(dataset / "photos"), str(dataset / "clip.avi")], out, **kwargs)
    finally:
        stop.set()
        killer.join()
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"a Ray worker process died {PART_ATTEMPTS} times")
    assert "parts finished and are kept; run the same command again to resume" in message
    assert len(killed) >= PART_ATTEMPTS and time.monotonic() - t < 240
    summary = annotate([str(dataset / "photos"), str(dataset / "clip.avi")], out, **kwargs)  # resumed
    assert summary.failed == 0
    assert sorted_hands(out).equals(sorted_hands(reference))
    assert item_rows(out) == item_rows(reference)


# ---------------------------------------------------------------------------------------------- crashes
def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_rows(reference, tiny_model, dataset, tmp_path):
    out = tmp_path / "ann"
    args = [sys.executable, "-m", "mlx_hands", "annotate", dataset / "photos", dataset / "clip.avi", "--out", out,
            "--model", tiny_model, *SETTINGS]
    proc = subprocess.Popen(list(map(str, args)), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any((out / "items").glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    committed = len(list((out / "items").glob("part-*.parquet")))
    assert 1 <= committed < 5, "the run was not cut in the middle"  # 4 parts of 2 images + the video
    r = cli(dataset / "photos", dataset / "clip.avi", "--out", out, "--model", tiny_model, *SETTINGS)
    assert "already done" in r.stdout
    assert sorted_hands(out).equals(sorted_hands(reference))
    assert folder_hands(out).equals(folder_hands(reference))
    assert item_rows(out) == item_rows(reference)
    assert not list(out.rglob("*.tmp"))


def test_debris_of_a_cut_commit_is_cleaned_on_resume(reference, tiny_model, dataset, tmp_path):
    out = tmp_path / "ann"
    shutil.copytree(reference, out)
    parts = sorted(p.name for p in (out / "items").glob("part-*.parquet"))
    redo = sum(pq.read_metadata(out / "items" / p).num_rows for p in parts[:3])
    (out / "items" / parts[0]).unlink()  # killed after the hands file was renamed, before the marker
    (out / "items" / parts[1]).unlink()  # killed while writing the hands file: only a temporary is left
    (out / "hands" / parts[1]).rename(out / "hands" / f".{parts[1]}.123-abc.tmp")
    (out / "items" / ".part-x.999-abc.tmp").write_bytes(b"PAR1 half a file")
    assert read_hands(out).num_rows < read_hands(reference).num_rows  # readers see committed parts only
    (out / "items" / parts[2]).write_bytes(b"PAR1 damaged on disk")  # unreadable marker: its part is redone
    r = cli(dataset / "photos", dataset / "clip.avi", "--out", out, "--model", tiny_model, *SETTINGS)
    assert f"({redo} done, 0 failed, {9 - redo} already done)" in r.stdout
    assert sorted_hands(out).equals(sorted_hands(reference))
    assert folder_hands(out).equals(folder_hands(reference))
    assert item_rows(out) == item_rows(reference)
    assert not list(out.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------- bad items
def test_corrupt_and_truncated_items_fail_and_the_run_goes_on(tiny_model, tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, (120, 160, 3)).astype(np.uint8)
    cv2.imwrite(str(d / "good.jpg"), img)
    jpg, png = cv2.imencode(".jpg", img)[1].tobytes(), cv2.imencode(".png", img)[1].tobytes()
    (d / "cut.jpg").write_bytes(jpg[: len(jpg) * 2 // 3])
    (d / "cut.png").write_bytes(png[: len(png) * 2 // 3])
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.png").write_text("not an image")
    video = write_video(d / "clip.avi", n=20).read_bytes()
    (d / "cut.avi").write_bytes(video[: len(video) * 6 // 10])
    out = tmp_path / "ann"
    r = cli(d, "--out", out, "--model", tiny_model, *SETTINGS, check=False)
    assert r.returncode == 1
    assert "7 items (2 done, 5 failed)" in r.stdout and "5 items failed" in r.stderr
    rows = {Path(s).name: (st, e) for s, st, _, _, e in item_rows(out)}
    assert rows["good.jpg"] == ("done", None)
    assert rows["cut.jpg"][0] == "failed" and "truncated JPEG" in rows["cut.jpg"][1]
    assert rows["cut.png"][0] == "failed" and "truncated PNG" in rows["cut.png"][1]
    assert rows["cut.avi"][0] == "failed"
    assert "video ends after" in rows["cut.avi"][1] and "of its 20 frames" in rows["cut.avi"][1]
    assert rows["clip.avi"] == ("done", None)
    assert rows["empty.jpg"][0] == rows["text.png"][0] == "failed"
    assert all("\n" not in e for st, e in rows.values() if e)
    assert set(read_hands(out).column("source").to_pylist()) == {str(d / "good.jpg"), str(d / "clip.avi")}
    # a second run keeps the failures (exit 1 again) unless asked to retry them
    r = cli(d, "--out", out, "--model", tiny_model, *SETTINGS, check=False)
    assert r.returncode == 1 and "7 items, all annotated by an earlier run (5 failed;" in r.stdout
    (d / "cut.jpg").write_bytes(jpg)
    r = cli(d, "--out", out, "--model", tiny_model, *SETTINGS, "--retry-failed", check=False)
    assert r.returncode == 1 and "(1 done, 4 failed, 2 already done" in r.stdout
    assert len(read_items(out)) == 7 and read_hands(out).num_rows == 2 + 20 * 2 + 2


def test_incomplete_image_files():
    img = np.random.default_rng(3).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    thumb = cv2.imencode(".jpg", img[:8, :8])[1].tobytes()
    # an EXIF-like APP1 segment holding a whole thumbnail (with its own end marker) before the image data
    app1 = b"\xff\xe1" + (len(thumb) + 2).to_bytes(2, "big") + thumb
    with_thumb = jpg[:2] + app1 + jpg[2:]
    assert incomplete(jpg) is None and incomplete(with_thumb) is None
    assert "truncated JPEG" in incomplete(with_thumb[:-100])
    assert incomplete(jpg + b"trailing bytes") is None
    assert "header" in incomplete(jpg[:10])
    png = cv2.imencode(".png", img)[1].tobytes()
    assert incomplete(png) is None and "PNG" in incomplete(png[:-5])


# ---------------------------------------------------------------------------------------------- inputs
def test_manifests_duplicates_and_missing_files(tiny_model, dataset, tmp_path):
    photos = dataset / "photos"
    lists = tmp_path / "lists"
    lists.mkdir()
    rel = os.path.relpath(photos / "img1.jpg", lists)
    (lists / "a.txt").write_text(f"# photos\n{photos / 'img0.png'}\n\n{rel}\n{photos / 'img1.jpg'}\nmissing.jpg\n")
    (lists / "b.csv").write_text(f"path,label\n{photos / 'img2.jpg'},x\n{photos / 'img0.png'},y\n")
    pq.write_table(pa.table({"path": [str(photos / "img3.png"), str(dataset / "clip.avi")]}), lists / "c.parquet")
    items, dropped = expand_inputs([str(lists / "a.txt"), str(lists / "b.csv"), str(lists / "c.parquet"),
                                    str(photos / "img3.png")])
    assert dropped == 3
    assert [i.source for i in items] == [str(photos / "img0.png"), rel, "missing.jpg", str(photos / "img2.jpg"),
                                         str(photos / "img3.png"), str(dataset / "clip.avi")]
    assert items[2].path == str(lists / "missing.jpg") and items[-1].kind == "video"
    out = tmp_path / "ann"
    s = annotate([str(lists / "a.txt"), str(lists / "b.csv"), str(lists / "c.parquet")], out,
                 spec=ModelSpec(str(tiny_model)), settings=Settings(conf=0.0, max_det=1, every_nth_frame=3),
                 batch_size=2, progress=False)
    assert (s.items, s.duplicates, s.done, s.failed) == (6, 2, 5, 1)
    rows = {src: (st, frames, err) for src, st, frames, _, err in item_rows(out)}
    assert rows["missing.jpg"][0] == "failed" and "no such image file" in rows["missing.jpg"][2]
    assert rows[str(dataset / "clip.avi")][:2] == ("done", 4)  # frames 0, 3, 6, 9
    video = read_hands(out).filter(pc.field("source") == str(dataset / "clip.avi")).to_pydict()
    assert sorted(video["frame"]) == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="'path' column"):
        (lists / "bad.csv").write_text("file\nx.jpg\n")
        expand_inputs([str(lists / "bad.csv")])
    with pytest.raises(FileNotFoundError, match="nope"):
        expand_inputs([str(tmp_path / "nope")])


def test_parts_are_the_same_when_a_run_resumes(dataset):
    items, _ = expand_inputs([str(dataset / "photos"), str(dataset / "clip.avi")])
    full = plan_parts(items, batch_size=3, images_per_part=4, done=set())
    assert [len(p.items) for p in full] == [1, 6, 2]  # the video first; 4 images rounded up to 2 batches of 3
    done = {i.key for i in full[1].items}
    assert plan_parts(items, batch_size=3, images_per_part=4, done=done) == [full[0], full[2]]


# ---------------------------------------------------------------------------------------------- settings
def test_changed_settings_are_refused_unless_asked(reference, tiny_model, dataset, tmp_path):
    out = tmp_path / "ann"
    shutil.copytree(reference, out)
    r = cli(dataset / "photos", "--out", out, "--model", tiny_model, *SETTINGS, "--max-det", "1", check=False)
    assert r.returncode == 2 and "settings.max_det: 2 in the folder, 1 now" in r.stderr and "--new-folder" in r.stderr
    with pytest.raises(SettingsChanged, match="settings.vertices"):
        annotate([str(dataset / "photos")], out, spec=ModelSpec(str(tiny_model)),
                 settings=Settings(conf=0.0, max_det=2, vertices=True), progress=False)
    r = cli(dataset / "photos" / "img0.png", "--out", out, "--model", tiny_model, *SETTINGS, "--max-det", "1",
            "--new-folder")
    assert f"-> {out}-2" in r.stdout
    assert json.loads((tmp_path / "ann-2" / "run.json").read_text())["settings"]["max_det"] == 1
    assert sorted_hands(out).equals(sorted_hands(reference))  # untouched
    cli(dataset / "photos" / "img0.png", "--out", out, "--model", tiny_model, *SETTINGS, "--vertices", "--overwrite")
    hands = read_hands(out)
    assert hands.num_rows == 2 and hands.schema.field("vertices").type == pa.list_(pa.float32(), 778 * 3)


def test_one_run_per_folder(tmp_path):
    with Output(tmp_path).lock():
        with pytest.raises(FolderBusy, match="another mlx-hands annotate run"):
            with Output(tmp_path).lock():
                pass
