"""`mlx-hands serve`: the real server in a subprocess on a tiny synthetic model, real HTTP (httpx) and
WebSocket (websockets) clients. Predict equals the library's output, streams keep track ids and drop stale
frames, bad input gets its error while another client keeps streaming, token, body limit, max clients,
loading state, clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="the [dev] extra installs httpx")
ws_sync = pytest.importorskip("websockets.sync.client", reason="the [dev] extra installs websockets")
pytest.importorskip("starlette", reason="the [serve] extra installs starlette")
pytest.importorskip("uvicorn", reason="the [serve] extra installs uvicorn")
from synth import write_tiny_model  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
APP_ORIGIN = "http://localhost:5173"  # a web app on another origin, allowed with --allow-origin


# ---------------------------------------------------------------------------------------------- helpers
def open_hand_model(path: Path) -> Path:
    """The tiny random model made to answer one fixed pose for every box, an open hand filling it (the heads'
    weights zeroed, their starting values set), so that the page draws something that looks like a hand."""
    from safetensors.numpy import load_file, save_file

    write_tiny_model(path)
    w = load_file(path / "model.safetensors")
    heads = ("backbone.decpose", "backbone.decshape", "backbone.deccam", "refine_net.dec_pose", "refine_net.dec_cam",
             "refine_net.dec_shape")
    for k in w:
        if k.removeprefix("wilor.").startswith(heads):
            w[k] = np.zeros_like(w[k])
    pose = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), 16)  # 6D identity: MANO's flat hand
    pose[:6] = [-1, 0, 0, 0, -1, 0]  # root turned 180 degrees about the view axis: fingers up
    w["wilor.backbone.init_hand_pose"] = pose[None]
    w["wilor.backbone.init_cam"] = np.array([[7.0, 0.0, 0.05]], np.float32)  # weak-perspective s, tx, ty
    save_file(w, path / "model.safetensors", metadata={"format": "mlx"})
    return path


class ServerProcess:
    """`python -m mlx_hands serve ...` in a subprocess; `url` once it listens, `wait_ready()` for /health."""

    def __init__(self, model: Path, *args: str, token: str | None = None):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        env.pop("MLX_HANDS_TOKEN", None)
        cmd = [sys.executable, "-m", "mlx_hands", "serve", "--model", str(model), "--conf", "0", "--port", "0", *args]
        if token:
            cmd += ["--token", token]
        self.token = token
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=ROOT)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        found = threading.Event()
        self.url = None

        def drain(stream, lines):
            for line in stream:
                lines.append(line)
                m = re.search(r"listening on (http://\S+?) ", line)
                if m and self.url is None:
                    self.url = m.group(1)
                    found.set()
            found.set()

        threading.Thread(target=drain, args=(self.proc.stdout, self.stdout), daemon=True).start()
        threading.Thread(target=drain, args=(self.proc.stderr, self.stderr), daemon=True).start()
        if not found.wait(60) or self.url is None:
            self.stop()
            raise AssertionError(f"server did not start: {''.join(self.stderr)[-3000:]}")
        self.ws_url = self.url.replace("http://", "ws://") + "/v1/stream"

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def wait_ready(self, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"server exited: {''.join(self.stderr)[-3000:]}"
            r = httpx.get(self.url + "/health", headers=self.headers)
            if r.status_code == 200:
                return
            assert r.status_code == 503 and r.json()["status"] == "loading", r.text
            time.sleep(0.1)
        raise AssertionError("model did not load in time")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not stop within {timeout} s after {sig!r}") from None


def encode(image_rgb: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, image_rgb[:, :, ::-1])
    assert ok
    return buf.tobytes()


def scene(t: float = 0.0, size=(120, 160)) -> np.ndarray:
    """A textured frame with a bright disc that moves with t (RGB uint8)."""
    h, w = size
    rng = np.random.default_rng(1)
    img = (rng.integers(0, 120, (h, w, 3))).astype(np.uint8)
    cv2.circle(img, (int(30 + 60 * t) % w, h // 2), 22, (250, 200, 160), -1)
    return img


def connect(server: ServerProcess, **kwargs):
    return ws_sync.connect(server.ws_url, additional_headers=server.headers, open_timeout=30, **kwargs)


def receive_json(ws, timeout: float = 60) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def recv_frames(ws, count: int, timeout: float = 60) -> list[dict]:
    """Messages until `count` frame results (errors are returned too)."""
    out = []
    while sum("hands" in m for m in out) < count:
        out.append(receive_json(ws, timeout))
    return out


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    # a tiny random WiLoR + detector and synthetic MANO, its heads fixed to an open hand: trackable keypoints
    return open_hand_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def server(tiny_model):
    s = ServerProcess(tiny_model, "--max-body-mb", "1", "--max-clients", "4", "--allow-origin", APP_ORIGIN,
                      token=TOKEN)
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def library_pipe(tiny_model):
    from mlx_hands.pipeline.runner import HandPosePipeline

    return HandPosePipeline.from_pretrained(str(tiny_model), conf=0.0, iou=0.7, max_det=300, rescale_factor=2.5)


# ---------------------------------------------------------------------------------------------- library
def test_predict_many_with_boxes_equals_predict_with_boxes_per_image(library_pipe):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, s + (3,)).astype(np.uint8) for s in [(120, 160), (90, 200), (64, 64)]]
    boxes = [[[10, 10, 80, 90], [60, 20, 150, 110]], np.zeros((0, 4)), [[5, 5, 60, 60]]]
    is_right = [[True, False], [], [1]]
    many = library_pipe.predict_many_with_boxes(images, boxes, is_right, confidence=[[0.9, 0.8], [], None],
                                                focal_length_px=400.0)
    assert [len(h) for h in many] == [2, 0, 1]
    assert [h.confidence for h in many[0]] == pytest.approx([0.9, 0.8]) and many[2][0].confidence == 1.0
    for image, b, r, hands in zip(images, boxes, is_right, many):
        one = library_pipe.predict_with_boxes(image, b, r, focal_length_px=400.0)
        for a, h in zip(one, hands):
            assert a.is_right == h.is_right
            for name in ("box", "keypoints_2d", "keypoints_3d", "vertices", "cam_t", "hand_pose"):
                np.testing.assert_allclose(getattr(h, name), getattr(a, name), rtol=1e-5, atol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match="one boxes, is_right"):
        library_pipe.predict_many_with_boxes(images, boxes[:2], is_right)


# ---------------------------------------------------------------------------------------------- HTTP
def test_health_info_and_token(server):
    url = server.url
    assert httpx.get(url + "/health").status_code == 401
    assert httpx.get(url + "/health", headers={"Authorization": "Bearer nope"}).status_code == 401
    r = httpx.get(url + "/health", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert httpx.get(url + f"/health?token={TOKEN}").json() == {"status": "ok"}
    r = httpx.post(url + "/v1/predict", content=encode(scene()))
    assert r.status_code == 401 and "token" in r.json()["error"]
    assert httpx.get(url + "/").status_code == 401
    page = httpx.get(url + f"/?token={TOKEN}")
    assert page.status_code == 200 and "getUserMedia" in page.text and "/v1/stream" in page.text
    info = httpx.get(url + "/v1/info", headers=AUTH).json()
    assert info["schema"] == "mlx-hands/1" and info["dtype"] == "float32" and info["quantization"] is None
    assert "cpu" in info["device"].lower()
    assert info["model"]["path"] and info["model"]["model_bytes"] > 0
    assert {"mlx-hands", "mlx", "python", "starlette", "uvicorn"} <= set(info["versions"])
    assert info["limits"] == {"max_body_mb": 1.0, "max_clients": 4, "max_batch": 16}
    assert httpx.get(url + "/nowhere", headers=AUTH).json() == {"error": "Not Found"}


def run_predict_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "mlx_hands", "predict", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_predict_equals_what_mlx_hands_predict_writes(server, tiny_model, tmp_path):
    paths = []
    for name in ("photo.jpg", "drawing.png"):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(encode(scene(), paths[-1].suffix))
    done = run_predict_cli(*map(str, paths), "--out", str(tmp_path / "out"), "--model", str(tiny_model), "--conf", "0")
    assert done.returncode == 0, done.stderr
    for path in paths:
        r = httpx.post(server.url + "/v1/predict?name=" + path.name, content=path.read_bytes(),
                       headers={**AUTH, "Content-Type": "image/jpeg" if path.suffix == ".jpg" else "image/png"},
                       timeout=60)
        assert r.status_code == 200, r.text
        got = r.json()
        want = json.loads((tmp_path / "out" / f"{path.stem}.json").read_text())
        assert len(got["hands"]) > 0 and got["image"] == path.name
        assert set(got["timings_ms"]) >= {"read", "wait", "detect", "model", "total"}
        for doc in (got, want):
            doc.pop("timings_ms"), doc.pop("image")
        assert got == want  # same schema, fields and numbers


def test_predict_options_as_query_parameters(server, library_pipe):
    image = scene()
    r = httpx.post(server.url + "/v1/predict?max_det=1&vertices=0&focal_length=300", content=encode(image),
                   headers=AUTH, timeout=60)
    got = r.json()
    hands = library_pipe(encode_decode(image), max_det=1, include_vertices=False, focal_length_px=300.0)
    assert len(got["hands"]) == 1 and "vertices" not in got["hands"][0]
    assert got["settings"]["max_det"] == 1 and got["settings"]["focal_length_px"] == 300.0
    assert got["hands"][0]["focal_length"] == 300.0
    # this process computes with MLX's own BLAS, the server with the system's: float rounding differs
    np.testing.assert_allclose(got["hands"][0]["keypoints_2d"], hands[0].keypoints_2d, rtol=1e-3, atol=1e-2)


def encode_decode(image: np.ndarray) -> np.ndarray:
    """The RGB image the server sees when it gets `image` as a JPEG."""
    return cv2.imdecode(np.frombuffer(encode(image), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def test_predict_with_caller_boxes_in_a_json_body(server, library_pipe):
    image = scene()
    boxes, is_right = [[20.0, 30.0, 90.0, 100.0], [80, 10, 150, 90]], [True, False]
    body = {"image": base64.b64encode(encode(image, ".png")).decode(), "boxes": boxes, "is_right": is_right,
            "vertices": False}
    r = httpx.post(server.url + "/v1/predict", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()["hands"]
    want = library_pipe.predict_with_boxes(image, boxes, is_right, include_vertices=False)
    assert [h["side"] for h in got] == ["right", "left"] and [h["confidence"] for h in got] == [1.0, 1.0]
    for g, w, box in zip(got, want, boxes):
        np.testing.assert_allclose(g["keypoints_2d"], w.keypoints_2d, rtol=1e-3, atol=1e-2)  # BLAS: see above
        assert g["box"] == box
    # a data: URL as browsers write it works too; detector options with caller boxes are refused
    body["image"] = "data:image/png;base64," + body["image"]
    assert httpx.post(server.url + "/v1/predict", json=body, headers=AUTH, timeout=60).status_code == 200
    r = httpx.post(server.url + "/v1/predict", json={**body, "conf": 0.5}, headers=AUTH)
    assert r.status_code == 400 and "conf" in r.json()["error"]


@pytest.mark.parametrize("body, query, headers, status, words", [
    (b"hello, not an image", "", {}, 415, "not a JPEG or PNG"),
    (b"", "", {}, 400, "empty image"),
    ("truncated-jpeg", "", {}, 400, "truncated JPEG"),
    ("truncated-png", "", {}, 400, "truncated PNG"),
    ("jpeg", "?conf=2", {}, 400, "conf must be"),
    ("jpeg", "?max_det=1.5", {}, 400, "max_det must be an integer"),
    ("jpeg", "?vertices=maybe", {}, 400, "vertices must be"),
    ("jpeg", "?colour=red", {}, 400, "unknown query parameter 'colour'"),
    (b"{not json", "", {"Content-Type": "application/json"}, 400, "not valid JSON"),
    (b'{"img": "x"}', "", {"Content-Type": "application/json"}, 400, '"image"'),
    (b'{"image": "@@@"}', "", {"Content-Type": "application/json"}, 400, "not valid base64"),
    ("json-bad-boxes", "", {"Content-Type": "application/json"}, 400, "boxes must have shape"),
    ("json-no-is-right", "", {"Content-Type": "application/json"}, 400, "is_right"),
    ("json-box-outside", "", {"Content-Type": "application/json"}, 400, "outside"),
])
def test_bad_requests_get_an_error_naming_the_problem(server, body, query, headers, status, words):
    jpeg = encode(scene())
    png = encode(scene(), ".png")
    b64 = base64.b64encode(jpeg).decode()
    body = {
        "truncated-jpeg": jpeg[: len(jpeg) // 2],
        "truncated-png": png[:-20],
        "jpeg": jpeg,
        "json-bad-boxes": json.dumps({"image": b64, "boxes": [[1, 2, 3]], "is_right": [True]}).encode(),
        "json-no-is-right": json.dumps({"image": b64, "boxes": [[1, 2, 30, 40]]}).encode(),
        "json-box-outside": json.dumps({"image": b64, "boxes": [[500, 500, 600, 600]], "is_right": [1]}).encode(),
    }.get(body, body)
    r = httpx.post(server.url + "/v1/predict" + query, content=body, headers={**AUTH, **headers}, timeout=60)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert httpx.get(server.url + "/health", headers=AUTH).status_code == 200


def test_body_limit_holds_while_the_body_streams_in(server):
    # Content-Length over the limit: refused from the header, before any of the body is sent
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/v1/predict")
    conn.putheader("Authorization", AUTH["Authorization"])
    conn.putheader("Content-Length", str(2 * 1024 * 1024))
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and "1 MB" in json.loads(r.read())["error"]
    conn.close()
    sent = []

    def chunks():  # no Content-Length: the server must stop reading after the limit, not after 50 MB
        for _ in range(200):
            sent.append(1)
            yield bytes(256 * 1024)

    try:
        r = httpx.post(server.url + "/v1/predict", content=chunks(), headers=AUTH, timeout=60)
        assert r.status_code == 413
    except httpx.TransportError:
        pass  # the server answered 413 and closed the connection while the client was still sending
    assert len(sent) < 100  # 25 MB at most of the 50 MB were taken from the client
    assert httpx.get(server.url + "/health", headers=AUTH).status_code == 200


@pytest.mark.parametrize("boxes", [False, True])
def test_concurrent_requests_share_one_forward(server, boxes):
    """Requests waiting at the same time go through one predict_many (detector) or predict_many_with_boxes
    (caller boxes, as a tracked stream's frames) call: one WiLoR forward."""
    image = encode(scene())
    body = {"image": base64.b64encode(image).decode(), "boxes": [[20, 20, 90, 100], [70, 10, 150, 90]],
            "is_right": [True, False], "vertices": False}

    def post(_):
        if boxes:
            r = httpx.post(server.url + "/v1/predict", json=body, headers=AUTH, timeout=120)
        else:
            r = httpx.post(server.url + "/v1/predict?vertices=0&max_det=3", content=image, headers=AUTH, timeout=120)
        assert r.status_code == 200, r.text
        return int(r.headers["X-Batch-Images"]), r.json()["hands"]

    batches = []
    for _ in range(3):
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(post, range(4)))
        batches += [b for b, _ in results]
        for _, hands in results:  # batched or not: the same hands (up to float rounding: other GEMM shapes)
            assert [(h["side"], h["box"]) for h in hands] == [(h["side"], h["box"]) for h in results[0][1]]
            np.testing.assert_allclose([h["keypoints_3d"] for h in hands], [h["keypoints_3d"] for h in results[0][1]],
                                       rtol=1e-4, atol=1e-5)
        if max(batches) > 1:
            break
    assert max(batches) > 1, batches


# ---------------------------------------------------------------------------------------------- WebSocket
@pytest.mark.parametrize("track", [False, True])
def test_stream_keeps_track_ids_and_sends_every_field(server, track):
    """track=False: the detector on every frame; True (the default): boxes from the keypoints between
    detections (pipeline.stream.HandStream), the detector every 3rd frame here."""
    frame = encode(scene())
    with connect(server) as ws:
        ws.send(json.dumps({"max_det": 2, "smooth": True, "beta": 0.05, "track": track, "detect_every": 3}))
        ack = receive_json(ws)["settings"]
        assert ack["max_det"] == 2 and ack["smooth"] is True and ack["track"] is track and ack["vertices"] is False
        messages = []
        for _ in range(6):  # one at a time: nothing is dropped
            ws.send(frame)
            messages.append(receive_json(ws))
    assert [m["frame"] for m in messages] == list(range(6))
    assert all(m["dropped"] == [] for m in messages)
    times = [m["time"] for m in messages]
    assert times[0] == 0.0 and times == sorted(times)
    ids = [[h["track_id"] for h in m["hands"]] for m in messages]
    assert len(ids[0]) == 2 and all(i == ids[0] for i in ids), ids
    detected = [m["hands"][0]["extra"]["detected"] for m in messages]
    assert detected == ([True, False, False, True, False, False] if track else [True] * 6)
    hand = messages[-1]["hands"][0]
    assert {"side", "confidence", "box", "keypoints_2d", "keypoints_3d", "cam_t", "global_orient", "hand_pose",
            "betas", "crop_cam", "focal_length", "track_id"} <= set(hand)
    assert "vertices" not in hand  # vertices on request ({"vertices": true})


def test_stream_keeps_only_the_newest_frame_and_reports_the_dropped(server):
    frames = [encode(scene(i / 10)) for i in range(12)]
    with connect(server) as ws:
        ws.send(json.dumps({"max_det": 1, "vertices": True}))
        receive_json(ws)
        for f in frames:  # all at once: faster than the model runs
            ws.send(f)
        seen, done = [], []
        while 11 not in done:
            m = receive_json(ws)
            assert "error" not in m, m
            done.append(m["frame"])
            seen += m["dropped"] + [m["frame"]]
            assert len(m["hands"][0]["vertices"]) == 778
    assert sorted(seen) == list(range(12))  # each frame either answered or reported dropped, once
    assert len(done) < 12 and done == sorted(done)


def test_bad_stream_input_gets_errors_while_another_client_streams(server):
    good = encode(scene())
    errors = []
    with connect(server) as a, connect(server) as b:
        a.send(json.dumps({"max_det": 1}))
        receive_json(a)
        stop = threading.Event()
        a_results = []

        def stream_a():
            while not stop.is_set():
                a.send(good)
                m = receive_json(a)
                assert "error" not in m, m
                a_results.append(m)

        worker = ThreadPoolExecutor(1)
        fut = worker.submit(stream_a)
        b.send(good)
        assert "hands" in receive_json(b)
        b.send("not a frame")
        errors.append(receive_json(b))
        b.send(b"definitely not a JPEG")
        errors.append(receive_json(b))
        b.send(good[: len(good) // 3])
        errors.append(receive_json(b))
        b.send(encode(scene(), ".png")[:-30])
        errors.append(receive_json(b))
        b.send(good)
        after = receive_json(b)
        stop.set()
        fut.result(timeout=60)
        worker.shutdown()
    assert "binary JPEG/PNG frame was expected" in errors[0]["error"]
    assert "not a JPEG or PNG" in errors[1]["error"] and errors[1]["frame"] == 1
    assert "truncated JPEG" in errors[2]["error"] and errors[2]["frame"] == 2
    assert "truncated PNG" in errors[3]["error"] and errors[3]["frame"] == 3
    assert after["frame"] == 4 and len(after["hands"]) > 0
    assert len(a_results) >= 2 and len({h["track_id"] for m in a_results for h in m["hands"]}) == 1


@pytest.mark.parametrize("settings, words", [
    ('{"max_det": 0}', "max_det must be"),
    ('{"smoothing": true}', "unknown stream setting 'smoothing'"),
    ('{"beta": -1}', "beta must be"),
    ('{"force_handedness": "up"}', "force_handedness must be one of left, right"),
    ('{"detect_every": 0}', "detect_every must be"),
    ("[1, 2]", "must be a JSON object"),
    ("hello", "not valid JSON"),
])
def test_bad_stream_settings_are_named_and_close_the_socket(server, settings, words):
    with connect(server) as ws:
        ws.send(settings)
        assert words in receive_json(ws)["error"]
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=30)
        assert e.value.rcvd.code == 1008


def test_stream_token_frame_limit_and_max_clients(server):
    with pytest.raises(InvalidStatus) as e:
        ws_sync.connect(server.ws_url, open_timeout=30)
    assert e.value.response.status_code == 401
    with ws_sync.connect(server.ws_url + f"?token={TOKEN}", open_timeout=30) as ws:
        with pytest.raises(ConnectionClosed) as e:  # the server may close while the frame is still going out
            ws.send(bytes(2 * 1024 * 1024))  # over --max-body-mb 1
            ws.recv(timeout=30)
        assert e.value.rcvd is None or e.value.rcvd.code == 1009  # message too big (or reset before it was read)
    # --max-clients 4: streams and predict requests count
    with contextlib.ExitStack() as stack:
        for _ in range(4):
            stack.enter_context(connect(server))
        with pytest.raises(InvalidStatus) as e:
            connect(server)
        assert e.value.response.status_code == 503
        r = httpx.post(server.url + "/v1/predict", content=encode(scene()), headers=AUTH)
        assert r.status_code == 503 and "max-clients" in r.json()["error"]
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/v1/info", headers=AUTH).json()["stats"]["clients"] and time.monotonic() < deadline:
        time.sleep(0.05)
    r = httpx.post(server.url + "/v1/predict", content=encode(scene()), headers=AUTH, timeout=60)
    assert r.status_code == 200


def test_web_pages_of_other_origins_need_allow_origin(server):
    evil = {"Origin": "http://evil.example"}
    r = httpx.post(server.url + "/v1/predict", content=encode(scene()), headers={**AUTH, **evil})
    assert r.status_code == 403 and "--allow-origin http://evil.example" in r.json()["error"]
    with pytest.raises(InvalidStatus) as e:
        ws_sync.connect(server.ws_url, additional_headers={**AUTH, **evil}, open_timeout=30)
    assert e.value.response.status_code == 403
    with connect(server, origin=server.url) as ws:  # the demo page's own origin
        ws.send(encode(scene()))
        assert "hands" in receive_json(ws)
    with connect(server, origin=APP_ORIGIN) as ws:
        ws.send(encode(scene()))
        assert "hands" in receive_json(ws)
    pre = httpx.options(server.url + "/v1/predict", headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == APP_ORIGIN
    r = httpx.post(server.url + "/v1/predict?max_det=1", content=encode(scene()),
                   headers={**AUTH, "Origin": APP_ORIGIN}, timeout=60)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP_ORIGIN


# ---------------------------------------------------------------------------------------------- lifecycle
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_cleanly(tiny_model, sig):
    s = ServerProcess(tiny_model)
    try:
        s.wait_ready()
        with connect(s) as ws:  # an open stream does not hold the server up
            ws.send(encode(scene()))
            assert "hands" in receive_json(ws)
            t = time.monotonic()
            rc = s.stop(sig)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
    finally:
        s.stop(signal.SIGKILL)
    assert rc == 0, "".join(s.stderr)
    assert time.monotonic() - t < 15
    time.sleep(0.2)
    assert any("stopped" in line for line in s.stdout)
    assert "Traceback" not in "".join(s.stderr)


def test_a_model_that_cannot_load_stops_the_server_with_its_error(tmp_path):
    s = ServerProcess(tmp_path / "no-such-model")
    rc = s.proc.wait(60)
    time.sleep(0.2)
    assert rc == 2
    err = "".join(s.stderr)
    assert "could not load the model" in err and "no-such-model" in err and "Traceback" not in err


def test_health_says_loading_until_the_model_is_loaded(tiny_model):
    """In-process: the same app on a real uvicorn server, with a loader that waits for the test."""
    import uvicorn

    from mlx_hands.pipeline.runner import HandPosePipeline
    from mlx_hands.serve.app import HandsServer, ServeConfig, bind
    from mlx_hands.serve.worker import InferenceWorker

    release = threading.Event()

    def load():
        assert release.wait(60)
        return HandPosePipeline.from_pretrained(str(tiny_model), conf=0.0)

    worker = InferenceWorker(load, warmup=False)
    app = HandsServer(ServeConfig(port=0), worker).app
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    worker.start()
    thread.start()
    try:
        r = None
        for _ in range(100):
            try:
                r = httpx.get(url + "/health")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert r.status_code == 503 and r.json() == {"status": "loading"}
        r = httpx.post(url + "/v1/predict", content=encode(scene()))
        assert r.status_code == 503 and "loading" in r.json()["error"]
        with pytest.raises(InvalidStatus) as e:
            ws_sync.connect(url.replace("http", "ws") + "/v1/stream", open_timeout=10)
        assert e.value.response.status_code == 503
        release.set()
        assert worker.ready.wait(60) and worker.state == "ok"
        assert httpx.get(url + "/health").json() == {"status": "ok"}
        assert httpx.post(url + "/v1/predict", content=encode(scene()), timeout=60).status_code == 200
    finally:
        release.set()
        uv.should_exit = True
        thread.join(30)
    assert not thread.is_alive() and not worker.alive and worker.state == "stopped"


def test_settings_checks():
    from mlx_hands.serve.settings import RequestError, check_image_bytes, parse_stream_settings

    s = parse_stream_settings({"conf": "0.5", "max_det": 2, "smooth": "false", "focal_length": 800})
    assert s.pipeline["conf"] == 0.5 and s.pipeline["focal_length_px"] == 800.0 and s.stream["smooth"] is False
    assert s.vertices is False and s.pipeline["iou"] is None  # None: the server's
    s = parse_stream_settings({"force_handedness": None, "max_hands": None, "track": 1, "vertices": "true"})
    assert s.stream == {"force_handedness": None, "max_hands": None, "track": True, "include_vertices": True}
    for bad in ({"conf": True}, {"max_det": "two"}, {"min_cutoff": 0}, {"focal_length": float("nan")},
                {"detect_every": 0}, {"force_handedness": "both"}, {"min_visible": 2}):
        with pytest.raises(RequestError):
            parse_stream_settings(bad)
    # a PNG whose header claims 100000 x 100000 pixels is refused before decoding
    png = bytearray(encode(scene(), ".png"))
    png[16:24] = (100000).to_bytes(4, "big") * 2
    with pytest.raises(RequestError) as e:
        check_image_bytes(bytes(png))
    assert e.value.status == 413 and "100000x100000" in e.value.message
    assert check_image_bytes(encode(scene())) == "jpeg"
