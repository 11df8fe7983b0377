"""The demo page in headless Chromium with a fake camera fed from a .y4m clip this test writes: the page
connects to the real server, sends webcam frames, receives hands and draws them over the video.

Needs Debian's `chromium` (apt-get install chromium) and Playwright for Python (the [dev] extra); Playwright
drives the system browser, it downloads none. MLX_HANDS_SCREENSHOT=docs/serve_demo.png also saves the
screenshot there (how the picture in docs/ was made).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_serve import TOKEN, ServerProcess, open_hand_model

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()),
                shutil.which("chromium"))
if CHROMIUM is None:
    pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium chromium-driver)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the [dev] extra installs playwright")

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]


def write_y4m(path: Path, frames: int = 30, size=(640, 480), fps: int = 15) -> Path:
    """A YUV4MPEG2 clip (text header + raw 4:2:0 planes per frame): a bright disc moving over a gradient."""
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = (np.concatenate([40 + 80 * x + 0 * y, 60 + 60 * y + 0 * x, 90 + 0 * x + 0 * y], axis=2)).astype(np.uint8)
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            rgb = base.copy()
            cx = int(w * (0.25 + 0.5 * i / frames))
            cv2.circle(rgb, (cx, h // 2), h // 5, (245, 200, 170), -1)
            cv2.putText(rgb, f"fake camera {i:02d}", (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
            f.write(b"FRAME\n" + cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def test_demo_page_streams_the_webcam_and_draws_hands(tmp_path):
    model = open_hand_model(tmp_path / "model")
    clip = write_y4m(tmp_path / "clip.y4m")
    server = ServerProcess(model, token=TOKEN)
    try:
        server.wait_ready()
        with sync_api.sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"),  # a fresh profile
                executable_path=CHROMIUM,
                headless=True,
                args=FLAGS + [f"--use-file-for-fake-video-capture={clip}"],
                viewport={"width": 900, "height": 640},
            )
            try:
                page = context.new_page()
                console = []
                page.on("console", lambda m: console.append(m.text))
                page.goto(f"{server.url}/?token={TOKEN}&max_det=2")
                page.wait_for_function(
                    "() => window.mlxHands && window.mlxHands.framesReceived >= 8 && window.mlxHands.handsDrawn > 0",
                    timeout=90_000)
                state = page.evaluate("() => window.mlxHands")
                drawn = page.evaluate("""() => {
                    const c = document.getElementById('overlay');
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0;
                    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                    return {pixels: n, width: c.width, height: c.height};
                }""")
                header = page.inner_text("header")
                page.screenshot(path=str(tmp_path / "serve_demo.png"))
            finally:
                context.close()
    finally:
        rc = server.stop()
    assert rc == 0
    assert state["connected"] and state["status"] == "connected" and not state["errors"], (state, console)
    assert state["settings"]["max_det"] == 2
    assert state["framesSent"] >= state["framesReceived"] >= 8
    assert 0 < len(state["lastHands"]) <= 2 and state["handsDrawn"] == len(state["lastHands"])
    hand = state["lastHands"][0]
    assert len(hand["keypoints_2d"]) == 21 and "track_id" in hand and hand["side"] in ("left", "right")
    assert state["frameSize"] == [640, 480] and state["latencyMs"] > 0 and state["fps"] > 0
    assert drawn["width"] > 0 and drawn["pixels"] > 500  # skeletons and boxes on the overlay canvas
    assert "round trip" in header and state["fps"] > 0
    shot = cv2.imread(str(tmp_path / "serve_demo.png"))
    assert shot is not None and shot.shape[0] > 100
    target = os.environ.get("MLX_HANDS_SCREENSHOT")
    if target:
        shutil.copyfile(tmp_path / "serve_demo.png", target)
