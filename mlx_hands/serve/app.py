"""The HTTP + WebSocket application (Starlette on uvicorn) around one shared inference worker.

    GET  /            the demo page (webcam -> /v1/stream -> skeletons drawn over the video)
    GET  /health      200 {"status": "ok"} once the model is loaded; 503 {"status": "loading"} before
    GET  /v1/info     model identity, dtype, quantization, device, versions, schema, limits
    POST /v1/predict  image bytes (options as query parameters) or JSON {"image": base64, "boxes": ...}
                      -> the JSON document `mlx-hands predict` writes for that image
    WS   /v1/stream   optional first text message with settings, then binary JPEG/PNG frames; one text
                      message per processed frame {"frame", "time", "hands", "dropped"}

Errors are JSON `{"error": "..."}` with a 4xx/5xx status (on the socket: a text message `{"error": ...}`).
The event loop never touches MLX or decodes images: decoding, tracking and JSON run in a thread pool, the
networks in the inference worker's thread (worker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import importlib.metadata
import importlib.resources
import json
import logging
import platform
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .. import __version__
from ..export import SCHEMA, results_dict
from ..pipeline.runner import validate_boxes
from .settings import (PREDICT_OPTIONS, STREAM_SETTINGS, RequestError, check_options, decode_base64,
                       decode_image, parse_stream_settings, pipeline_kwargs)
from .stream import StreamProcessor, frame_message
from .worker import InferenceWorker, WorkerPipe, WorkerUnavailable

log = logging.getLogger(__name__)

QUERY_EXTRAS = ("token", "name")  # query parameters that are not pipeline options
BOX_FIELDS = ("image", "boxes", "is_right", "confidence", "name")


@dataclasses.dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_body_mb: float = 20.0  # request bodies and stream frames
    max_clients: int = 16  # open streams + predict requests in progress
    max_batch: int = 16  # images in one forward
    allow_origins: tuple[str, ...] = ()  # web pages of other origins that may call the API ("*": any)
    verbose: bool = False

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if not self.max_body_mb > 0:
            raise ValueError(f"--max-body-mb must be positive, got {self.max_body_mb}")
        if self.max_clients < 1:
            raise ValueError(f"--max-clients must be at least 1, got {self.max_clients}")
        if self.max_batch < 1:
            raise ValueError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.token is not None and not self.token.strip():
            raise ValueError("--token must not be empty")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def _error(status: int, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _versions() -> dict[str, str]:
    out = {"mlx-hands": __version__, "python": platform.python_version()}
    for name in ("mlx", "numpy", "opencv-python-headless", "starlette", "uvicorn", "websockets"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def describe_runtime(pipe) -> dict[str, Any]:
    """What /v1/info adds to pipe.info (asked in the inference thread): the MLX device."""
    return {"device": pipe.device}


class HandsServer:
    """One model, many clients: the routes, the client count and the thread pool around an InferenceWorker."""

    def __init__(self, config: ServeConfig, worker: InferenceWorker):
        self.config, self.worker = config, worker
        self.clients = 0
        # decoding, tracking and JSON; each client has at most one step in flight, so this never queues long
        self.pool = ThreadPoolExecutor(max_workers=config.max_clients + 2, thread_name_prefix="mlx-hands-io")
        self.index_html = importlib.resources.files(__package__).joinpath("static/index.html").read_text("utf-8")
        self.started = time.time()
        self.app = Starlette(
            routes=[
                Route("/", self.index),
                Route("/health", self.health),
                Route("/v1/info", self.info),
                Route("/v1/predict", self.predict, methods=["POST"]),
                WebSocketRoute("/v1/stream", self.stream),
            ],
            exception_handlers={HTTPException: self._http_error},
            lifespan=self._lifespan,
            middleware=[Middleware(CORSMiddleware, allow_origins=list(config.allow_origins),
                                   allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                                   expose_headers=["X-Batch-Images"])] if config.allow_origins else [],
        )

    # ------------------------------------------------------------------ plumbing
    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        yield
        # uvicorn has closed the connections: queued jobs fail now; serve() waits for the thread itself
        self.worker.stop(timeout=0)
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail), **(exc.headers or {}))

    def _origin_allowed(self, conn: HTTPConnection) -> bool:
        """Browsers name the page that makes a request (Origin): this server's own pages, the --allow-origin
        ones, and programs (which send none) may use it; another web site open in the same browser may not."""
        origin = conn.headers.get("origin")
        if origin is None or "*" in self.config.allow_origins or origin in self.config.allow_origins:
            return True
        return origin.partition("://")[2] == conn.headers.get("host")

    def _denied(self, conn: HTTPConnection, *, client: bool) -> JSONResponse | None:
        """401 without the token, 403 from a foreign web page; for client routes also 503 while loading or
        when --max-clients are busy."""
        if not self._origin_allowed(conn):
            origin = conn.headers.get("origin")
            return _error(403, f"requests from web pages at {origin} are not allowed: start the server with "
                               f"--allow-origin {origin}")
        token = self.config.token
        if token is not None:
            header = conn.headers.get("authorization", "")
            given = [header[7:].strip()] if header[:7].lower() == "bearer " else []
            given += conn.query_params.getlist("token")
            if not any(hmac.compare_digest(g.encode(), token.encode()) for g in given):
                return _error(401, "missing or wrong token: send 'Authorization: Bearer <token>' or ?token=<token>",
                              **{"WWW-Authenticate": "Bearer"})
        if not client:
            return None
        if self.worker.state != "ok":
            status = {"loading": "the model is still loading (poll /health)",
                      "error": f"the model failed to load: {self.worker.error}",
                      "stopped": "the server is shutting down"}[self.worker.state]
            return _error(503, status, **{"Retry-After": "1"})
        if self.clients >= self.config.max_clients:
            return _error(503, f"server busy: {self.clients} clients connected (--max-clients "
                               f"{self.config.max_clients})", **{"Retry-After": "1"})
        return None

    async def _in_pool(self, fn: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # ------------------------------------------------------------------ plain routes
    async def index(self, request: Request) -> Response:
        return self._denied(request, client=False) or HTMLResponse(self.index_html)

    async def health(self, request: Request) -> Response:
        denied = self._denied(request, client=False)
        if denied:
            return denied
        state = self.worker.state
        body = {"status": state}
        if state == "error":
            body["error"] = self.worker.error
        return JSONResponse(body, status_code=200 if state == "ok" else 503)

    async def info(self, request: Request) -> Response:
        denied = self._denied(request, client=False)
        if denied:
            return denied
        if self.worker.state != "ok":
            return JSONResponse({"status": self.worker.state}, status_code=503)
        info = dict(self.worker.info)
        pipe = self.worker.pipe
        return JSONResponse({
            "schema": SCHEMA,
            "model": dict(pipe.info),
            "dtype": info.get("dtype"),
            "quantization": info.get("quantization"),
            "device": info.get("device"),
            "versions": _versions(),
            "settings": self._settings(pipeline_kwargs({})),
            "options": {"predict": list(PREDICT_OPTIONS), "stream": list(STREAM_SETTINGS)},
            "limits": {"max_body_mb": self.config.max_body_mb, "max_clients": self.config.max_clients,
                       "max_batch": self.config.max_batch},
            "stats": {"clients": self.clients, "batches": self.worker.batches, "images": self.worker.images,
                      "uptime_s": round(time.time() - self.started, 3)},
        })

    def _settings(self, kwargs: dict) -> dict:
        """The settings block of a result document (pipe.settings_dict(), as `mlx-hands predict` writes it)
        with this request's options in it."""
        settings = self.worker.pipe.settings_dict()
        settings.update({k: kwargs[k] for k in settings if kwargs.get(k) is not None})
        return settings

    # ------------------------------------------------------------------ predict
    async def _read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it is known to be over the limit (header or bytes so far)."""
        limit = self.config.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise RequestError(400, f"bad Content-Length header {length!r}")
            if int(length) > limit:
                raise RequestError(413, f"body of {int(length)} bytes is over this server's limit of "
                                        f"{self.config.max_body_mb:g} MB (--max-body-mb)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body is over this server's limit of {self.config.max_body_mb:g} MB "
                                        "(--max-body-mb)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def predict(self, request: Request) -> Response:
        denied = self._denied(request, client=True)
        if denied:
            return denied
        self.clients += 1
        try:
            return await self._predict(request)
        except RequestError as e:
            headers = {"Connection": "close"} if e.status == 413 else {}
            return _error(e.status, e.message, **headers)
        except WorkerUnavailable as e:
            return _error(503, str(e), **{"Retry-After": "1"})
        except Exception as e:  # a fault of the server, not of the request: say so in JSON, keep serving
            log.exception("predict failed")
            return _error(500, f"internal error: {type(e).__name__}: {e}")
        finally:
            self.clients -= 1

    async def _predict(self, request: Request) -> Response:
        t0 = time.perf_counter()
        query = {k: v for k, v in request.query_params.items() if k not in QUERY_EXTRAS}
        options = check_options(query, PREDICT_OPTIONS, "query parameter")
        name = request.query_params.get("name")
        body = await self._read_body(request)
        boxes = None
        if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
            try:
                doc = json.loads(body)
            except (ValueError, UnicodeDecodeError) as e:
                raise RequestError(400, f"the body is not valid JSON: {e}") from None
            if not isinstance(doc, dict) or "image" not in doc:
                raise RequestError(400, 'a JSON body must be an object with "image" (base64 JPEG/PNG bytes)')
            json_options = {k: v for k, v in doc.items() if k not in BOX_FIELDS}
            options.update(check_options(json_options, PREDICT_OPTIONS, "field"))
            name = doc.get("name", name)
            body = decode_base64(doc["image"], "image")
            if doc.get("boxes") is not None:
                detector_only = sorted({"conf", "iou", "max_det"} & set(options))
                if detector_only:
                    raise RequestError(400, f"{', '.join(detector_only)} set the detector, which caller boxes "
                                            "replace; leave them out or leave out boxes")
                if doc.get("is_right") is None:
                    raise RequestError(400, 'boxes need "is_right": one true (right) / false (left) per box')
                boxes = (doc["boxes"], doc["is_right"], doc.get("confidence"))
        image = await self._in_pool(decode_image, body)
        H, W = image.shape[:2]
        kwargs = pipeline_kwargs(options)
        if boxes is None:
            job = self.worker.submit("__call__", image, **kwargs)
        else:
            try:
                b, r, c = validate_boxes(*boxes[:2], (W, H), boxes[2])
            except (ValueError, TypeError) as e:
                raise RequestError(400, str(e)) from None
            kwargs = {k: v for k, v in kwargs.items() if k not in ("conf", "iou", "max_det")}
            job = self.worker.submit("predict_with_boxes", image, b, r, confidence=c, **kwargs)
        try:
            hands = await asyncio.wrap_future(job.future)
        except ValueError as e:  # the pipeline's own checks (say, a focal length it cannot use)
            raise RequestError(400, str(e)) from None
        timings = {"read": job.submitted - t0, "wait": job.wait, **job.timings}
        doc = results_dict(
            hands,
            image_size=(W, H),
            source=name or "request",
            include_vertices=kwargs["include_vertices"],
            model=dict(self.worker.pipe.info),
            settings=self._settings(kwargs),
            timings_ms={k: round(v * 1000, 3) for k, v in timings.items()},
        )
        text = await self._in_pool(json.dumps, doc)
        return Response(text, media_type="application/json", headers={"X-Batch-Images": str(job.batch)})

    # ------------------------------------------------------------------ stream
    async def stream(self, ws: WebSocket) -> None:
        denied = self._denied(ws, client=True)
        if denied:
            await ws.send_denial_response(denied)
            return
        self.clients += 1
        try:
            await ws.accept()
            await _StreamConnection(self, ws).run()
        finally:
            self.clients -= 1


class _StreamConnection:
    """One WebSocket client: a receive loop that keeps only the newest unprocessed frame (the ones it
    replaces are reported in `dropped`) and a processing loop that runs one frame at a time."""

    def __init__(self, server: HandsServer, ws: WebSocket):
        self.server, self.ws = server, ws
        self.settings = parse_stream_settings({})
        self.processor = self._processor(self.settings)
        self.pending: tuple[int, float, bytes] | None = None
        self.dropped: list[int] = []
        self.received = 0
        self.t0: float | None = None
        self.last_t = float("-inf")
        self.wake = asyncio.Event()
        self.send_lock = asyncio.Lock()

    def _processor(self, settings) -> StreamProcessor:
        return StreamProcessor(WorkerPipe(self.server.worker, settings.pipeline), settings)

    async def send(self, message: dict | str) -> None:
        async with self.send_lock:
            if self.ws.application_state == WebSocketState.CONNECTED:
                await self.ws.send_text(message if isinstance(message, str) else json.dumps(message))

    async def run(self) -> None:
        processing = asyncio.create_task(self._process_loop())
        try:
            await self._receive_loop()
        except WebSocketDisconnect:
            pass
        finally:
            processing.cancel()
            await asyncio.gather(processing, return_exceptions=True)

    async def _receive_loop(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("bytes") is not None:
                now = time.monotonic()
                self.t0 = now if self.t0 is None else self.t0
                t = max(now - self.t0, self.last_t + 1e-6)  # the tracker needs increasing times
                self.last_t = t
                if self.pending is not None:
                    self.dropped.append(self.pending[0])
                self.pending = (self.received, t, msg["bytes"])
                self.received += 1
                self.wake.set()
            elif msg.get("text") is not None:
                if not await self._settings_message(msg["text"]):
                    return

    async def _settings_message(self, text: str) -> bool:
        """A text message: settings before the first frame, an error after. False: the socket was closed."""
        if self.received:
            await self.send({"error": "text message where a binary JPEG/PNG frame was expected (settings go in "
                                      "a text message before the first frame)"})
            return True
        try:
            try:
                message = json.loads(text)
            except ValueError as e:
                raise RequestError(400, f"the settings message is not valid JSON: {e}") from None
            settings = parse_stream_settings(message)
            self.processor, self.settings = self._processor(settings), settings
        except RequestError as e:
            await self.send({"error": e.message})
            await self.ws.close(code=1008, reason="bad settings")
            return False
        await self.send({"settings": {**self.server._settings(self.settings.pipeline), **self.processor.settings(),
                                      "vertices": self.settings.vertices}})
        return True

    async def _process_loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.pending is None:
                continue
            (index, t, data), self.pending = self.pending, None
            dropped, self.dropped = self.dropped, []
            try:
                message = await self.server._in_pool(self._step, index, t, data, dropped)
            except RequestError as e:
                message = {"error": e.message, "frame": index, "dropped": dropped}
            except WorkerUnavailable as e:
                await self.send({"error": str(e), "frame": index, "dropped": dropped})
                await self.ws.close(code=1013, reason="try again later")
                return
            except Exception as e:  # keep the connection; say what went wrong with this frame
                log.exception("frame %d failed", index)
                message = {"error": f"frame {index} failed: {type(e).__name__}: {e}", "frame": index,
                           "dropped": dropped}
            try:
                await self.send(message)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return

    def _step(self, index: int, t: float, data: bytes, dropped: list[int]) -> str:
        """Pool thread: decode, detect (in the worker, batched), track, encode the message."""
        image = decode_image(data, f"frame {index}")
        hands = self.processor.process(image, t)
        return json.dumps(frame_message(index, t, hands, dropped, include_vertices=self.settings.vertices))


# ---------------------------------------------------------------------------------------------- running
def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one); OSError naming the address if it is taken."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as e:
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


class _Server(uvicorn.Server):
    """uvicorn's server, telling the worker as soon as a signal asks it to stop: the requests and frames that
    wait for the model then get "shutting down" answers at once, so the graceful shutdown has nothing to wait
    for (a forward on a CPU can take seconds)."""

    def __init__(self, worker: InferenceWorker, config: uvicorn.Config):
        super().__init__(config)
        self.worker = worker

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        self.worker.stop(timeout=0)


def serve(config: ServeConfig, load: Callable[[], Any], *, on_listening: Callable[[str], None] | None = None,
          warmup: bool = True, stop_timeout: float = 5.0) -> bool:
    """Bind, start loading the model in the inference thread, and serve until SIGINT/SIGTERM.

    `load()` returns the HandPosePipeline; it runs in the inference thread. Raises ValueError if the model
    cannot be loaded (the server stops by itself then). Returns True if the inference thread has ended, False
    if it is still inside a model load or a forward after `stop_timeout` s: native code that cannot be
    interrupted. A program should then end with os._exit (mlx-hands serve does): the interpreter's normal
    teardown would destroy MLX's state under that thread and abort.
    """
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    worker = InferenceWorker(load, describe=describe_runtime, max_batch=config.max_batch, warmup=warmup)
    server_app = HandsServer(config, worker)
    uv = _Server(worker, uvicorn.Config(
        server_app.app,
        log_level="info" if config.verbose else "warning",
        access_log=config.verbose,
        ws_max_size=config.max_body_bytes,
        ws_per_message_deflate=False,  # JPEG frames do not compress; deflating them costs CPU on both ends
        timeout_graceful_shutdown=5,
        lifespan="on",
    ))

    def stop(*_):
        uv.should_exit = True

    worker.on_load_error = stop
    # uvicorn handles SIGINT/SIGTERM while it runs and re-raises them afterwards: ours then just ask it to stop
    # again (a no-op), so a signal ends the process normally with status 0
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.start()
        if on_listening:
            shown = f"[{host}]" if ":" in host else host
            on_listening(f"http://{shown}:{port}")
        uv.run(sockets=[sock])
    finally:
        ended = worker.stop(stop_timeout)
        server_app.pool.shutdown(wait=False, cancel_futures=True)
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if worker.state == "error":
        raise ValueError(f"could not load the model: {worker.error}")
    return ended
