"""Load test of `mlx-hands serve` on loopback, bounded in time: N streaming clients (frames at a fixed rate,
not waiting for answers, as a webcam does) and M predict clients (one request after another), for --seconds.

Reports per kind the round trip p50/p99, frames answered and dropped, errors (must be 0), how many images the
worker put in each forward, and the server's memory (VmRSS from /proc/<pid>/status) over time.

    python benchmarks/serve_load.py --synthetic tiny --streams 4 --predict 2 --seconds 20
    python benchmarks/serve_load.py --synthetic full --streams 2 --predict 1 --seconds 40 --max-det 1
    python benchmarks/serve_load.py --model ./wilor-mlx --streams 8 --predict 4 --seconds 60   # real weights

--synthetic writes a model folder into a temporary directory: `tiny` (the tests' tiny WiLoR and detector) or
`full` (full-size networks with random weights, mlx_hands.synthetic.random_model/random_detector: real cost, not
real hands). The server runs as a subprocess (`python -m mlx_hands serve`), so its memory is its own.
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------------------------------- model
def write_synthetic_model(kind: str, path: Path) -> Path:
    """A converted model folder with random weights (mlx_hands.synthetic.write_model): 'tiny' (the tests' 2-block
    WiLoR and narrow detector) or 'full' (the real sizes, stored in float16 to halve the memory of writing it;
    the server computes in float32, --dtype)."""
    import dataclasses

    # MLX only when a model is to be written: the clients need none
    from mlx_hands.config import DetectorConfig, WiLoRConfig
    from mlx_hands.synthetic import TINY, TINY_DETECTOR, write_model

    if kind == "tiny":
        return write_model(path, TINY, dataclasses.replace(TINY_DETECTOR, imgsz=160), source={"synthetic": kind})
    return write_model(path, WiLoRConfig(), DetectorConfig(), dtype="float16", source={"synthetic": kind})


# ---------------------------------------------------------------------------------------------- server
class Server:
    def __init__(self, model: Path, args: list[str]):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, "-m", "mlx_hands", "serve", "--model", str(model), "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.url = None
        self.output: list[str] = []
        found = threading.Event()

        def drain():
            for line in self.proc.stdout:
                self.output.append(line)
                m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
                if m and not found.is_set():
                    self.url = m.group(1)
                    found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(120) or not self.url:
            self.proc.kill()
            raise SystemExit("server did not start:\n" + "".join(self.output))

    def wait_ready(self, timeout: float) -> float:
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            if self.proc.poll() is not None:
                raise SystemExit("server exited:\n" + "".join(self.output))
            if httpx.get(self.url + "/health").status_code == 200:
                return time.monotonic() - t
            time.sleep(0.2)
        raise SystemExit(f"model not loaded after {timeout} s")

    def rss_mb(self) -> float | None:
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        m = re.search(r"VmRSS:\s+(\d+) kB", text)
        return int(m.group(1)) / 1024 if m else None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


# ---------------------------------------------------------------------------------------------- clients
def frames(count: int, size=(640, 480)) -> list[bytes]:
    """JPEG frames of a textured scene with a disc moving across it."""
    w, h = size
    rng = np.random.default_rng(0)
    base = rng.integers(0, 140, (h, w, 3)).astype(np.uint8)
    out = []
    for i in range(count):
        img = base.copy()
        cv2.circle(img, (int(w * (0.2 + 0.6 * i / count)), h // 2), h // 6, (170, 200, 245), -1)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    return out


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.rtt: list[float] = []
        self.sent = self.answered = self.dropped = self.errors = 0
        self.error_messages: list[str] = []
        self.server_timings: list[dict] = []  # timings_ms of the predict answers (stages of their batch)

    def error(self, message: str):
        with self.lock:
            self.errors += 1
            if len(self.error_messages) < 10:
                self.error_messages.append(message)


def stream_client(url: str, data: list[bytes], fps: float, deadline: float, settings: dict, stats: Stats,
                  grace: float):
    sent_at: dict[int, float] = {}
    done = threading.Event()
    try:
        with connect(url, open_timeout=60, max_size=None, compression=None) as ws:
            ws.send(json.dumps(settings))
            ack = json.loads(ws.recv(timeout=60))
            if "error" in ack:
                stats.error(ack["error"])
                return
            n_sent = [0]
            accounted = [0]

            def receive():
                while not done.is_set():
                    try:
                        m = json.loads(ws.recv(timeout=0.5))
                    except TimeoutError:
                        continue
                    except Exception:
                        return
                    now = time.perf_counter()
                    with stats.lock:
                        stats.dropped += len(m.get("dropped", []))
                        accounted[0] += len(m.get("dropped", [])) + 1
                        if "error" in m:
                            stats.errors += 1
                            stats.error_messages.append(m["error"])
                        else:
                            stats.answered += 1
                            stats.rtt.append(now - sent_at[m["frame"]])

            rx = threading.Thread(target=receive, daemon=True)
            rx.start()
            period, nxt, i = 1.0 / fps, time.perf_counter(), 0
            while time.monotonic() < deadline:
                sent_at[i] = time.perf_counter()
                ws.send(data[i % len(data)])
                i += 1
                n_sent[0] = i
                with stats.lock:
                    stats.sent += 1
                nxt += period
                time.sleep(max(0.0, nxt - time.perf_counter()))
            end = time.monotonic() + grace  # the newest frame is always answered: wait for it
            while time.monotonic() < end:
                with stats.lock:
                    if accounted[0] >= n_sent[0]:
                        break
                time.sleep(0.05)
            with stats.lock:
                missing = n_sent[0] - accounted[0]
            if missing:
                stats.error(f"{missing} frames neither answered nor reported dropped after {grace} s")
            done.set()
            rx.join(2)
    except Exception as e:  # connection refused, closed by the server, ...
        stats.error(f"stream: {type(e).__name__}: {e}")


def predict_client(url: str, data: list[bytes], deadline: float, query: str, stats: Stats):
    with httpx.Client(timeout=600) as client:
        i = 0
        while time.monotonic() < deadline:
            t = time.perf_counter()
            try:
                r = client.post(url + "/v1/predict" + query, content=data[i % len(data)],
                                headers={"Content-Type": "image/jpeg"})
            except httpx.HTTPError as e:
                stats.error(f"predict: {type(e).__name__}: {e}")
                continue
            i += 1
            with stats.lock:
                stats.sent += 1
            if r.status_code != 200:
                stats.error(f"predict: HTTP {r.status_code}: {r.text[:200]}")
                continue
            with stats.lock:
                stats.answered += 1
                stats.rtt.append(time.perf_counter() - t)
                stats.server_timings.append(r.json()["timings_ms"])


def summary(stats: Stats, seconds: float) -> dict:
    rtt = np.array(stats.rtt) * 1000
    pct = (lambda q: round(float(np.percentile(rtt, q)), 1)) if len(rtt) else (lambda q: None)
    out = {"sent": stats.sent, "answered": stats.answered, "dropped": stats.dropped, "errors": stats.errors,
           "answered_per_s": round(stats.answered / seconds, 2), "rtt_ms_p50": pct(50), "rtt_ms_p99": pct(99),
           "rtt_ms_max": pct(100), "error_messages": stats.error_messages}
    if stats.server_timings:
        keys = stats.server_timings[0].keys()
        out["server_ms_p50"] = {k: round(float(np.median([t.get(k, 0) for t in stats.server_timings])), 1)
                                for k in keys}
    return out


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="a converted model folder (or anything --model of serve takes)")
    src.add_argument("--synthetic", choices=["tiny", "full"], help="write a random-weight model folder first")
    p.add_argument("--streams", type=int, default=4, help="streaming clients (default 4)")
    p.add_argument("--predict", type=int, default=2, help="predict clients (default 2)")
    p.add_argument("--seconds", type=float, default=20, help="how long the clients send (default 20)")
    p.add_argument("--fps", type=float, default=30, help="frames per second each stream sends (default 30)")
    p.add_argument("--conf", type=float, default=0.0,
                   help="detector threshold (default 0, so that random detectors find hands)")
    p.add_argument("--max-det", type=int, default=2, help="hands per frame (default 2)")
    p.add_argument("--dtype", default=None, help="the server's compute dtype (default: float32 for --synthetic full, "
                   "the CPU's; bfloat16 on a GPU)")
    p.add_argument("--sample", type=float, default=1.0, help="seconds between memory samples (default 1)")
    p.add_argument("--grace", type=float, default=120, help="seconds to wait for the last answers (default 120)")
    p.add_argument("--load-timeout", type=float, default=600)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--server-arg", action="append", default=[], help="extra argument for `mlx-hands serve`")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        model = args.model or write_synthetic_model(args.synthetic, Path(tmp) / args.synthetic)
        dtype = args.dtype or ("float32" if args.synthetic == "full" else None)
        dtype = ["--dtype", dtype] if dtype else []
        server = Server(model, [*dtype, "--conf", str(args.conf), "--max-det", str(args.max_det),
                                "--max-clients", str(args.streams + args.predict + 1), *args.server_arg])
        load_s = server.wait_ready(args.load_timeout)
        rss = [(0.0, server.rss_mb())]  # once loaded (and warmed up): the baseline of the load
        info = httpx.get(server.url + "/v1/info").json()
        print(f"server {server.url}: model loaded in {load_s:.1f} s, device {info['device']}, "
              f"dtype {info['dtype']}, rss {server.rss_mb():.0f} MB", flush=True)
        data = frames(16)
        streams, predicts = Stats(), Stats()
        t0 = time.monotonic()
        deadline = t0 + args.seconds
        ws_url = server.url.replace("http://", "ws://") + "/v1/stream"
        settings = {"max_det": args.max_det}
        threads = [threading.Thread(target=stream_client, args=(ws_url, data, args.fps, deadline, settings, streams,
                                                                args.grace)) for _ in range(args.streams)]
        threads += [threading.Thread(target=predict_client, args=(server.url, data, deadline,
                                                                  f"?max_det={args.max_det}&vertices=0", predicts))
                    for _ in range(args.predict)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(args.sample)
            rss.append((round(time.monotonic() - t0, 1), server.rss_mb()))
        elapsed = time.monotonic() - t0
        stats = httpx.get(server.url + "/v1/info").json()["stats"]
        rss.append((round(time.monotonic() - t0, 1), server.rss_mb()))
        rc = server.stop()

    mb = [m for _, m in rss if m is not None]
    during = [m for t, m in rss[1:] if m is not None]
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": info["device"], "dtype": info["dtype"], "model": info["model"].get("source") or str(model),
        "streams": args.streams, "predict_clients": args.predict, "seconds": args.seconds, "fps": args.fps,
        "max_det": args.max_det, "elapsed_s": round(elapsed, 1),
        "stream": summary(streams, elapsed), "predict": summary(predicts, elapsed),
        "forwards": stats["batches"], "images": stats["images"],
        "images_per_forward": round(stats["images"] / max(stats["batches"], 1), 2),
        "rss_mb": {"loaded": round(mb[0], 1) if mb else None, "min": round(min(during), 1) if during else None,
                   "max": round(max(during), 1) if during else None, "end": round(mb[-1], 1) if mb else None,
                   "samples": [(t, round(m, 1)) for t, m in rss if m is not None]},
        "server_exit": rc,
    }
    for kind in ("stream", "predict"):
        s = result[kind]
        print(f"{kind:8s} sent {s['sent']:5d}  answered {s['answered']:5d} ({s['answered_per_s']}/s)  dropped "
              f"{s['dropped']:5d}  errors {s['errors']}  round trip p50 {s['rtt_ms_p50']} ms  p99 {s['rtt_ms_p99']} ms")
        if "server_ms_p50" in s:
            print("         server stages of the batch, p50 ms: " + ", ".join(
                f"{k} {v:g}" for k, v in s["server_ms_p50"].items()))
        for m in s["error_messages"]:
            print(f"         error: {m}")
    r = result["rss_mb"]
    print(f"forwards {result['forwards']}, {result['images_per_forward']} images each; server RSS MB: loaded "
          f"{r['loaded']}, during {r['min']}..{r['max']}, end {r['end']}; exit status {rc}")
    print("rss over time (s, MB): " + " ".join(f"{t:g}:{m:.0f}" for t, m in r["samples"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if streams.errors == 0 and predicts.errors == 0 and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
