"""The Ray Data engine: parts as a dataset, `map_batches` over an actor pool that loads the model once per
actor and commits every part itself.

    ray.data.from_items(parts) -> map_batches(RayAnnotator, compute=ActorPoolStrategy(size=N), num_gpus=G, batch_size=1)

Only the small status rows travel back to the driver (never hand rows). With num_gpus=G, Ray gives each actor
its own GPU(s) through CUDA_VISIBLE_DEVICES, which MLX honours. An actor that dies is restarted and its part
redone by Ray; the part's files are replaced, so nothing is doubled. A part whose worker dies PART_ATTEMPTS times
(a crash in native code, the memory killer) stops the run with one error instead of Ray Data's default of retrying
it forever; the parts finished are committed and the same command resumes. The
output folder must be one path that every node can write (a shared file system) and mlx-hands must be
installed on every node.

Ray is imported by run_ray only (it is an optional extra). In an actor's process the system OpenBLAS is in
place before MLX loads, as everywhere: the package's __init__ sees to it (mlx_hands.blas).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import worker
from .inputs import Part

log = logging.getLogger(__name__)

PART_ATTEMPTS = 3  # tries of one part on workers that die under it, before the run stops with an error

class RayAnnotator:
    """A Ray Data actor: loads the pipeline once, then annotates and commits the parts of each batch."""

    def __init__(self, spec: dict, settings: dict, out: str, run: dict, batch_size: int):
        t = time.perf_counter()
        spec_, settings_ = worker.ModelSpec(**spec), worker.Settings(**settings)
        here = worker.model_identity(spec_)
        expected = {k: v for k, v in run["model"].items() if k != "model"}
        if {k: v for k, v in here.items() if k != "model"} != expected:
            raise ValueError(f"worker {worker.worker_name()} finds other model files than the driver for "
                             f"{spec.get('model')!r}: {here} vs {run['model']}")
        self.annotator = worker.Annotator(worker.load_pipeline(spec_, settings_), settings_, out, run, batch_size)
        self.setup = time.perf_counter() - t  # reported with the first part

    def __call__(self, batch: dict) -> dict:
        results = []
        for text in batch["part"]:
            before = dict(self.annotator.timings)
            statuses = self.annotator(Part.from_dict(json.loads(str(text))))
            timings = {k: v - before.get(k, 0.0) for k, v in self.annotator.timings.items()}
            timings["setup"], self.setup = self.setup, 0.0
            small = [{k: s.get(k) for k in ("path", "status", "frames", "hands")} for s in statuses]
            results.append(json.dumps({"statuses": small, "timings": timings}))
        return {"result": np.array(results, dtype=object)}


def check_ray() -> None:
    """One clear error, before anything starts, when Ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise ValueError("--engine ray needs Ray Data: pip install 'mlx-hands[ray]' (or 'ray[data]')")


def run_ray(parts: list[Part], *, spec, settings, out: Path, run: dict, batch_size: int, workers: int | None,
            gpus_per_worker: float | None, address: str | None, on_part: Callable[[list[dict]], None]) -> dict:
    """Annotate the parts on Ray: joins the cluster at `address` (or the one this process is connected to),
    else starts a local one with this machine's cores. workers: actors (default: one per GPU, or 1 without
    GPUs); gpus_per_worker: GPUs per actor (default 1 if the cluster has GPUs, else 0). Returns stage timings
    summed over the actors."""
    import ray  # optional heavy dependency: pip install "mlx-hands[ray]"

    t = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        gpus = (1.0 if cluster_gpus else 0.0) if gpus_per_worker is None else float(gpus_per_worker)
        if gpus > cluster_gpus:
            raise ValueError(f"--gpus-per-worker {gpus:g}: the Ray cluster has {cluster_gpus:g} GPUs")
        n = workers or (max(1, int(cluster_gpus // gpus)) if gpus else 1)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver shows its own bar over items
        ctx.print_on_execution_start = False
        rows = [{"part": json.dumps(p.to_dict())} for p in parts]
        # one block per part (up to 10000): parts spread evenly and a dead actor redoes only its own
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 10_000)).map_batches(
            RayAnnotator,
            fn_constructor_kwargs={"spec": dataclasses.asdict(spec), "settings": dataclasses.asdict(settings),
                                   "out": os.path.abspath(out), "run": run, "batch_size": batch_size},
            batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n), num_gpus=gpus or None,
            **part_retries(ray.data.Dataset.map_batches),
        )
        timings = {"setup": time.perf_counter() - t}  # Ray start; the actors add their model loading
        done = 0
        try:
            for row in ds.iter_rows():
                result = json.loads(row["result"])
                for k, v in result["timings"].items():
                    timings[k] = timings.get(k, 0.0) + v
                on_part(result["statuses"])
                done += 1
        except ray.exceptions.RayError as e:
            died = isinstance(e, (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError))
            raise ValueError(ray_failure(e, died, done, len(parts))) from None
        return timings
    finally:
        if started:
            ray.shutdown()


def part_retries(map_batches) -> dict:
    """Bound the tries of a part whose actor dies (actors themselves still restart without limit: pre-empted
    nodes). Ray Data takes it as an extra Ray option of map_batches, which it announces it will drop in Ray 2.64;
    a Ray without them keeps its own policy (unbounded), and the run then cannot stop on a crashing part."""
    params = inspect.signature(map_batches).parameters.values()
    if any(p.kind is p.VAR_KEYWORD or p.name == "max_task_retries" for p in params):
        return {"max_task_retries": PART_ATTEMPTS - 1}
    log.warning("this Ray version takes no max_task_retries: a part that crashes its worker is retried without end")
    return {}


def ray_failure(error: BaseException, died: bool, done: int, total: int) -> str:
    """One line for a Ray run that stopped (died: a worker process died under a part): what happened, what is
    kept, what to do."""
    cause = getattr(error, "cause", None)  # a RayTaskError carries the worker's own exception
    if died:
        what = (f"a Ray worker process died {PART_ATTEMPTS} times running the same part (a crash in native code or "
                "the memory killer; the Ray logs of the node say which)")
    elif isinstance(cause, Exception) and cause is not error:
        what = f"a Ray worker failed: {worker.one_line(cause)}"
    else:
        what = f"Ray stopped the run: {worker.one_line(error)}"
    return (f"{what}. {done} of {total} parts finished and are kept; run the same command again to resume "
            f"(or annotate the remaining items with --engine local to see which one fails)")
