"""The inference worker: the one thread that drives MLX for the whole server.

MLX (like most GPU runtimes) is driven from one thread. The worker loads the pipeline, warms it up, then takes
jobs from a bounded queue. The calls that are waiting when the worker comes round are run together: every
`pipe(image)` through `pipe.predict_many` (the detector on each image, one WiLoR forward for all their hands),
every `pipe.predict_with_boxes(...)` (a tracked stream's frames, caller boxes) through
`pipe.predict_many_with_boxes`. Jobs with different options run as separate groups; `detect` one by one.

Other threads use the pipeline through `WorkerPipe`, which looks like a HandPosePipeline but queues each call
and waits for its result, so per-connection code (tracking, smoothing) can stay plain synchronous numpy.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# pipeline calls that jobs from several clients share one forward for -> their number of positional arguments
BATCHED = {"__call__": 1, "predict_with_boxes": 3}


class WorkerUnavailable(RuntimeError):
    """The worker cannot take a job: the model is still loading, failed to load, the queue is full or the
    server is stopping. `status` is the HTTP status that says so (503)."""

    status = 503


@dataclasses.dataclass(eq=False)
class Job:
    method: str  # a HandPosePipeline method name; those in BATCHED are batched
    args: tuple
    kwargs: dict
    future: Future = dataclasses.field(default_factory=Future)
    submitted: float = dataclasses.field(default_factory=time.perf_counter)
    wait: float = 0.0  # seconds in the queue
    batch: int = 1  # images in the forward this job was part of
    timings: dict = dataclasses.field(default_factory=dict)  # pipe.last_timings of that call (the whole batch)


class InferenceWorker:
    """Loads the pipeline with `load()` in its own thread, then runs queued jobs there.

    state: "loading" -> "ok" (or "error", with `error` the message) -> "stopped". `info` describes the
    loaded model (pipe.info plus what `describe(pipe)` adds). `on_load_error(message)` is called from the
    worker thread if loading fails.
    """

    def __init__(
        self,
        load: Callable[[], Any],
        *,
        describe: Callable[[Any], dict] | None = None,
        max_batch: int = 16,
        max_queue: int = 256,
        warmup: bool = True,
        on_load_error: Callable[[str], None] | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._load, self._describe = load, describe
        self.max_batch, self.warmup = max_batch, warmup
        self.on_load_error = on_load_error
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._stopping = threading.Event()
        self._lock = threading.RLock()  # stop() also runs in a signal handler, maybe inside submit()
        self.ready = threading.Event()
        self.state = "loading"
        self.error: str | None = None
        self.pipe = None
        self.info: dict = {}
        self._running: list[Job] = []  # the jobs of the batch in progress
        self.batches = 0  # forwards run
        self.images = 0  # images through batched calls
        self._thread = threading.Thread(target=self._main, name="mlx-hands-inference", daemon=True)

    # ------------------------------------------------------------------ any thread
    def start(self) -> InferenceWorker:
        self._thread.start()
        return self

    def submit(self, method: str, *args, **kwargs) -> Job:
        """Queue `pipe.<method>(*args, **kwargs)`; the job's future gets the result (or the exception)."""
        with self._lock:
            state = "stopped" if self._stopping.is_set() else self.state
            if state != "ok":
                reason = {"loading": "the model is still loading", "error": f"the model failed to load: {self.error}",
                          "stopped": "the server is shutting down"}[state]
                raise WorkerUnavailable(reason)
            job = Job(method, args, kwargs)
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise WorkerUnavailable(f"server busy: {self._queue.maxsize} jobs are already waiting") from None
        return job

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the current batch; queued jobs fail with WorkerUnavailable. Waits up to `timeout` s for
        the thread (not at all while the model loads: that cannot be interrupted). True if it has ended."""
        with self._lock:  # no job is queued after this
            self._stopping.set()
        for job in list(self._running):  # their callers get their answer now; the forward's result is dropped
            _settle(job, error=WorkerUnavailable("the server is shutting down"))
        self._fail_waiting()
        self._queue.put(None)  # wakes the worker (the queue was just emptied)
        if self.state != "loading" and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ worker thread
    def _main(self) -> None:
        try:
            t = time.perf_counter()
            self.pipe = self._load()
            if self.warmup:
                _warm_up(self.pipe)
            self.info = {**dict(getattr(self.pipe, "info", {}) or {}),
                         **(self._describe(self.pipe) if self._describe else {})}
            log.info("model loaded and warmed up in %.1f s", time.perf_counter() - t)
        except Exception as e:  # any failure to load is reported to the user, not raised in a thread
            self.error = f"{type(e).__name__}: {e}" if not isinstance(e, (ValueError, OSError)) else str(e)
            self.state = "error"
            log.error("could not load the model: %s", self.error)
            self.ready.set()
            if self.on_load_error:
                self.on_load_error(self.error)
            return
        if not self._stopping.is_set():
            self.state = "ok"
        self.ready.set()
        try:
            while not self._stopping.is_set():
                job = self._queue.get()
                if job is None:
                    break
                jobs = [job]
                while len(jobs) < self.max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._stopping.set()
                        break
                    jobs.append(nxt)
                self._run(jobs)
        finally:
            self.state = "stopped"
            self._fail_waiting()

    def _fail_waiting(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                _settle(job, error=WorkerUnavailable("the server is shutting down"))

    def _run(self, jobs: list[Job]) -> None:
        self._running = jobs
        try:
            self._run_batch(jobs)
        finally:
            self._running = []

    def _run_batch(self, jobs: list[Job]) -> None:
        start = time.perf_counter()
        for job in jobs:
            job.wait = start - job.submitted
        groups: dict[tuple, list[Job]] = {}
        for job in jobs:
            if job.method in BATCHED and len(job.args) == BATCHED[job.method]:
                options = tuple(sorted((k, v) for k, v in job.kwargs.items() if k != "confidence"))
                groups.setdefault((job.method, options), []).append(job)
            else:
                self._run_one(job)
        for (method, _), group in groups.items():
            if len(group) == 1:
                self._run_one(group[0])
                continue
            try:
                results = self._many(method, group)
            except Exception:  # one bad input must not fail the others: run them one by one
                log.warning("a batch of %d images failed; running them one by one", len(group), exc_info=True)
                for job in group:
                    self._run_one(job)
                continue
            self.batches += 1
            self.images += len(group)
            timings = dict(self.pipe.last_timings)
            for job, hands in zip(group, results):
                job.batch, job.timings = len(group), timings
                _settle(job, hands)

    def _many(self, method: str, group: list[Job]) -> list:
        """One call of the pipeline for a group of jobs with the same options: one WiLoR forward."""
        options = {k: v for k, v in group[0].kwargs.items() if k != "confidence"}
        if method == "__call__":
            return self.pipe.predict_many([j.args[0] for j in group], **options)
        confidence = [j.kwargs.get("confidence") for j in group]
        return self.pipe.predict_many_with_boxes(
            [j.args[0] for j in group], [j.args[1] for j in group], [j.args[2] for j in group],
            confidence=None if all(c is None for c in confidence) else confidence, **options)

    def _run_one(self, job: Job) -> None:
        try:
            result = getattr(self.pipe, job.method)(*job.args, **job.kwargs)
        except Exception as e:  # goes back to the caller's thread
            _settle(job, error=e)
            return
        if job.method in BATCHED:
            self.batches += 1
            self.images += 1
        job.timings = dict(getattr(self.pipe, "last_timings", {}) or {})
        _settle(job, result)


def _settle(job: Job, result=None, error: BaseException | None = None) -> None:
    """Give a job its result or error, unless it has one already (stop() may answer a job mid-forward)."""
    try:
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
    except InvalidStateError:
        pass


def _warm_up(pipe) -> None:
    """One detector pass and one WiLoR forward, so that the first client does not pay for first-call setup."""
    image = np.zeros((256, 256, 3), np.uint8)
    if getattr(pipe, "detector", None) is not None:
        pipe.detect(image)
    pipe.predict_with_boxes(image, [[64.0, 64.0, 192.0, 192.0]], [True])


class WorkerPipe:
    """A HandPosePipeline look-alike for threads other than the worker's: each call runs in the worker.

    `options` are pipeline options this caller's calls get unless it passes its own (a stream's conf, max_det,
    focal_length_px, ...; None values are left out). One per caller (it remembers its last call's timings):
    `last_timings`, `last_wait` (seconds queued) and `last_batch` (images in that forward). Reading plain
    attributes (conf, iou, info, ...) goes to the real pipeline; they are Python values, no MLX.
    """

    _DETECT = ("conf", "iou", "max_det")
    _CROP = ("rescale_factor", "focal_length_px")

    def __init__(self, worker: InferenceWorker, options: dict | None = None, timeout: float | None = 300.0):
        self._worker, self._timeout = worker, timeout
        self._options = {k: v for k, v in (options or {}).items() if v is not None}
        self.last_timings: dict = {}
        self.last_wait = 0.0
        self.last_batch = 0

    def _with(self, names, options: dict) -> dict:
        return {**{k: v for k, v in self._options.items() if k in names}, **options}

    def _call(self, method: str, *args, **kwargs):
        job = self._worker.submit(method, *args, **kwargs)
        result = job.future.result(self._timeout)
        self.last_timings, self.last_wait, self.last_batch = job.timings, job.wait, job.batch
        return result

    def __call__(self, image: np.ndarray, **options):
        return self._call("__call__", image, **self._with(self._DETECT + self._CROP, options))

    def predict_with_boxes(self, image: np.ndarray, boxes, is_right, **options):
        return self._call("predict_with_boxes", image, boxes, is_right, **self._with(self._CROP, options))

    def detect(self, image: np.ndarray, **options):
        return self._call("detect", image, **self._with(self._DETECT, options))

    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("model", "detector", "faces"):  # MLX stays in the worker's thread
            raise AttributeError(name)
        return getattr(self._worker.pipe, name)
