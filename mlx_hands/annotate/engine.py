"""annotate(): inputs -> an annotation folder, on this machine (engine "local") or on Ray Data ("ray").

    from mlx_hands.annotate import annotate
    summary = annotate(["photos/", "clips/"], "ann/", settings=Settings(conf=0.3), batch_size=16)

Both engines run the same Annotator on the same parts, so they write the same rows. The local engine loads
the model once in this process and shows a progress bar; the Ray engine is in ray_engine.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from .inputs import expand_inputs, key_of, plan_parts
from .ray_engine import check_ray, run_ray
from .store import Output
from .worker import Annotator, ModelSpec, Settings, load_pipeline, model_identity

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
IMAGES_PER_PART = 64


@dataclasses.dataclass
class Summary:
    out: str
    items: int  # distinct input items
    duplicates: int  # input entries dropped as duplicates
    skipped: int  # items committed by an earlier run and left as they were
    done: int  # items annotated now
    failed_now: int  # items that failed now
    failed: int  # items of these inputs whose committed status is 'failed' (now or earlier)
    frames: int  # frames annotated now
    hands: int  # hands found now
    seconds: float
    timings: dict  # seconds per stage, summed over workers: setup (model load, Ray start), decode, detect, model, write
    engine: str

    def line(self) -> str:
        if not self.done and not self.failed_now:
            failed = f" ({self.failed} failed; --retry-failed tries them again)" if self.failed else ""
            return f"{self.items} items, all annotated by an earlier run{failed} -> {self.out}"
        s = max(self.seconds, 1e-9)
        rate = f"{self.frames / s:.1f} frames/s, {self.hands / s:.1f} hands/s"
        parts = [f"{self.done} done", f"{self.failed_now} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} already done")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate{'s' if self.duplicates != 1 else ''} dropped")
        earlier = self.failed - self.failed_now
        tail = f"; {earlier} failed in an earlier run (--retry-failed tries them again)" if earlier > 0 else ""
        return (f"{self.items} items ({', '.join(parts)}): {self.frames} frames, {self.hands} hands in "
                f"{self.seconds:.1f} s ({rate}) -> {self.out}{tail}")


class Progress:
    """tqdm over items with frames/s and hands/s; does nothing when disabled or stderr is not a terminal."""

    def __init__(self, total: int, initial: int, enabled: bool):
        # disable=None: shown only when stderr is a terminal
        self.bar = tqdm(total=total, initial=initial, unit="item", dynamic_ncols=True, disable=(not enabled) or None)
        self.start, self.frames, self.hands = time.perf_counter(), 0, 0

    def update(self, statuses: Sequence[dict]) -> None:
        self.frames += sum(s["frames"] for s in statuses)
        self.hands += sum(s["hands"] for s in statuses)
        dt = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.frames / dt:.1f} frames/s, {self.hands / dt:.1f} hands/s", refresh=False)
        self.bar.update(len(statuses))

    def close(self) -> None:
        self.bar.close()


def free_folder(out: Path, run: dict) -> Path:
    """`out`, or the first of out-2, out-3, ... that is new or holds a run with the same model and settings."""
    candidate, n = out, 1
    while Output(candidate).differences(run):
        n += 1
        candidate = out.with_name(f"{out.name}-{n}")
    return candidate


def run_local(parts, *, spec: ModelSpec, settings: Settings, out: Path, run: dict, batch_size: int,
              on_part: Callable[[list[dict]], None]) -> dict:
    """Annotate the parts in this process, one after the other. Returns the stage timings."""
    t = time.perf_counter()
    annotator = Annotator(load_pipeline(spec, settings), settings, out, run, batch_size)
    annotator.timings["setup"] = time.perf_counter() - t  # loading the model
    for part in parts:
        on_part(annotator(part))
    return annotator.timings


def annotate(
    inputs: Sequence[str],
    out: str | os.PathLike,
    *,
    spec: ModelSpec = ModelSpec(),
    settings: Settings = Settings(),
    engine: str = "local",
    batch_size: int = 8,
    images_per_part: int = IMAGES_PER_PART,
    resume: bool = True,
    new_folder: bool = False,
    retry_failed: bool = False,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    ray_address: str | None = None,
    progress: bool = True,
) -> Summary:
    """Annotate images and videos into the folder `out` (see the package docstring for its layout).

    resume: skip the items `out` already holds (a folder made with another model or settings is refused:
    new_folder writes to out-2, ... instead; resume=False deletes earlier results). retry_failed: items that
    failed before are tried again. engine "ray": workers actors with gpus_per_worker GPUs each, on the cluster
    at ray_address or on a local one (see ray_engine.run_ray).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    settings.check()
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if images_per_part < 1:
        raise ValueError(f"--images-per-part must be at least 1, got {images_per_part}")
    if engine == "local" and (workers not in (None, 1) or gpus_per_worker or ray_address):
        raise ValueError("--workers, --gpus-per-worker and --ray-address need --engine ray")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if gpus_per_worker is not None and gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
    if engine == "ray":
        check_ray()
    items, duplicates = expand_inputs(inputs)
    run = {"model": model_identity(spec), "settings": dataclasses.asdict(settings)}
    folder = Path(out)
    if new_folder and resume:
        folder = free_folder(folder, run)
        if folder != Path(out):
            log.warning("%s holds a run with other settings; writing to %s", out, folder)
    store = Output(folder)
    t0 = time.perf_counter()
    with store.lock():
        store.start(run, resume=resume)
        status = store.recover(retry_failed=retry_failed)
        keys = {i.key for i in items}
        skipped = sum(k in status for k in keys)
        parts = plan_parts(items, batch_size=batch_size, images_per_part=images_per_part, done=set(status))
        bar = Progress(len(items), skipped, progress)
        new: list[dict] = []

        def on_part(statuses: list[dict]) -> None:
            new.extend(statuses)
            bar.update(statuses)

        try:
            if not parts:
                timings = {}
            elif engine == "local":
                timings = run_local(parts, spec=spec, settings=settings, out=folder, run=run, batch_size=batch_size,
                                    on_part=on_part)
            else:
                timings = run_ray(parts, spec=spec, settings=settings, out=folder, run=run, batch_size=batch_size,
                                  workers=workers, gpus_per_worker=gpus_per_worker, address=ray_address,
                                  on_part=on_part)
        finally:
            bar.close()
    for s in new:
        status[key_of(s["path"])] = s["status"]
    return Summary(
        out=str(folder), items=len(items), duplicates=duplicates, skipped=skipped,
        done=sum(s["status"] == "done" for s in new), failed_now=sum(s["status"] == "failed" for s in new),
        failed=sum(status.get(k) == "failed" for k in keys), frames=sum(s["frames"] for s in new),
        hands=sum(s["hands"] for s in new), seconds=time.perf_counter() - t0,
        timings={k: round(v, 3) for k, v in timings.items()}, engine=engine)

