"""The annotation folder: run.json, hands/ and items/, atomic commits and recovery after a crash.

    DIR/run.json                   format, model identity and settings (a later run must match them to resume)
    DIR/hands/part-<id>.parquet    the hand rows of one part (absent when the part found no hands)
    DIR/items/part-<id>.parquet    one status row per item of the part: the part's commit marker

A part is committed by writing its hands file under a temporary name, renaming it into place (os.replace),
then doing the same for its items file. A part counts as done only when its items file exists, so a process
killed at any moment leaves either a committed part or debris that `recover()` removes: temporary files and
hands files without an items file. A redone part has the same file names and replaces them, so no hand can
appear twice. Part names are digests of their items' paths (see inputs.Part).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .. import __version__
from .inputs import key_of
from .schema import ITEMS_SCHEMA, hands_schema

log = logging.getLogger(__name__)

FORMAT = "mlx-hands-annotate/1"
RUN_FILE, HANDS_DIR, ITEMS_DIR, LOCK_FILE = "run.json", "hands", "items", ".lock"
ROW_GROUP = 8192  # hand rows buffered before a Parquet row group is written


class SettingsChanged(ValueError):
    """The folder holds a run made with another model or other settings."""


class FolderBusy(OSError):
    """Another run holds the folder's lock."""


def _fsync_replace(tmp: Path, dst: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())  # the bytes reach the disk before the name does
    os.replace(tmp, dst)


def _tmp_name(folder: Path, name: str) -> Path:
    return folder / f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"  # hidden: readers of *.parquet skip it


class PartWriter:
    """Writes one part: hand tables (streamed to a temporary file) then, in commit(), the items marker."""

    def __init__(self, root: str | os.PathLike, name: str, schema: pa.Schema):
        self.root, self.name, self.schema = Path(root), name, schema
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self._buffer.append(table)
            self._buffered += table.num_rows
            self.rows += table.num_rows
            if self._buffered >= ROW_GROUP:
                self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self._tmp = _tmp_name(self.root / HANDS_DIR, self.name)
            self._writer = pq.ParquetWriter(self._tmp, self.schema)
        self._writer.write_table(pa.concat_tables(self._buffer), row_group_size=max(self._buffered, 1))
        self._buffer, self._buffered = [], 0

    def commit(self, items: pa.Table) -> None:
        """Put the hands file in place (or remove a stale one), then the items file: the part is done."""
        self._flush()
        hands = self.root / HANDS_DIR / f"{self.name}.parquet"
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            _fsync_replace(self._tmp, hands)
        else:
            hands.unlink(missing_ok=True)
        tmp = _tmp_name(self.root / ITEMS_DIR, self.name)
        pq.write_table(items.cast(ITEMS_SCHEMA), tmp)
        _fsync_replace(tmp, self.root / ITEMS_DIR / f"{self.name}.parquet")

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        self._buffer = []


def read_parts(folder: Path, schema: pa.Schema, columns: list[str] | None = None,
               names: set[str] | None = None) -> pa.Table:
    """The part files of a folder (only those in `names`, if given) as one table."""
    files = sorted(str(f) for f in folder.glob("part-*.parquet") if names is None or f.stem in names)
    if not files:
        return schema.empty_table().select(columns or schema.names)
    return pads.dataset(files, format="parquet", schema=schema).to_table(columns=columns)


class Output:
    """One annotation folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.hands_dir, self.items_dir = self.root / HANDS_DIR, self.root / ITEMS_DIR

    # ------------------------------------------------------------------ run identity
    def read_run(self) -> dict | None:
        try:
            return json.loads((self.root / RUN_FILE).read_text())
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise ValueError(f"{self.root / RUN_FILE} is damaged ({e}); start over with --no-resume") from None

    def has_results(self) -> bool:
        return any(self.items_dir.glob("part-*.parquet")) or any(self.hands_dir.glob("part-*.parquet"))

    def differences(self, run: dict) -> list[str]:
        """What differs between the folder's run.json and `run` (model identity and settings), as lines."""
        old = self.read_run()
        if old is None:
            return ["(no run.json)"] if self.has_results() else []
        if old.get("format") != FORMAT:
            return [f"format: {old.get('format')} -> {FORMAT}"]
        lines = []
        for section in ("model", "settings"):
            a, b = dict(old.get(section) or {}), dict(run.get(section) or {})
            if section == "model":  # how the model was named does not matter, its files do
                a.pop("model", None), b.pop("model", None)
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    lines.append(f"{section}.{k}: {a.get(k)!r} in the folder, {b.get(k)!r} now")
        return lines

    def start(self, run: dict, *, resume: bool) -> None:
        """Prepare the folder for `run`: resume (the same model and settings, else SettingsChanged) or start
        over (resume=False: earlier results are deleted)."""
        if resume:
            diff = self.differences(run)
            if diff:
                raise SettingsChanged(
                    f"{self.root} holds annotations made with another model or other settings:\n  " + "\n  ".join(diff)
                    + "\nresume with the same settings, or pass --new-folder (write next to it) or --overwrite "
                    "(start over)")
        else:
            self.clear()
        self.hands_dir.mkdir(parents=True, exist_ok=True)
        self.items_dir.mkdir(parents=True, exist_ok=True)
        if self.read_run() is None:
            doc = {"format": FORMAT, "mlx_hands": __version__,
                   "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **run}
            tmp = _tmp_name(self.root, "run")
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
            _fsync_replace(tmp, self.root / RUN_FILE)

    def clear(self) -> None:
        for d in (self.hands_dir, self.items_dir):
            if d.is_dir():
                shutil.rmtree(d)
        (self.root / RUN_FILE).unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self):
        """Held while a run writes here: a second run on the same folder is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                raise FolderBusy(f"another mlx-hands annotate run is writing to {self.root} "
                                   f"({f.read().strip() or 'pid unknown'}); wait for it or stop it") from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
            try:
                yield self
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ recovery and state
    def recover(self, *, retry_failed: bool = False) -> dict[str, str]:
        """Clean up after an interrupted run and return {item key: status} of the committed items.

        Removes temporary files and hands files without an items file (a commit cut short); an items file
        whose hands file is missing (deleted by hand) is dropped, so that its part is redone. retry_failed:
        the failed rows are taken out of their items files, so those items are tried again.
        """
        removed = 0
        for d in (self.hands_dir, self.items_dir, self.root):
            for tmp in d.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                removed += 1
        markers = {p.stem for p in self.items_dir.glob("part-*.parquet")}
        hands = {p.stem for p in self.hands_dir.glob("part-*.parquet")}
        table = self._read_markers(markers)
        status: dict[str, str] = {}
        by_part: dict[str, list[tuple[str, str, int]]] = {}
        for path, st, n, part in zip(*(table.column(c).to_pylist() for c in ("path", "status", "hands", "part"))):
            by_part.setdefault(part, []).append((path, st, n))
        for part, rows in by_part.items():
            if sum(n for _, _, n in rows) and part not in hands:
                log.warning("%s: %s lists hands but its hands file is missing; it will be redone", self.root, part)
                (self.items_dir / f"{part}.parquet").unlink()
                markers.discard(part)
                removed += 1
                continue
            if retry_failed and any(st == "failed" for _, st, _ in rows):
                marker = self.items_dir / f"{part}.parquet"
                kept = pq.read_table(marker).filter(pc.field("status") != "failed")
                if kept.num_rows:
                    tmp = _tmp_name(self.items_dir, part)
                    pq.write_table(kept, tmp)
                    _fsync_replace(tmp, marker)
                else:
                    marker.unlink()
                    markers.discard(part)
                rows = [r for r in rows if r[1] != "failed"]
            for path, st, _ in rows:
                status[key_of(path)] = st
        for orphan in hands - markers:
            (self.hands_dir / f"{orphan}.parquet").unlink(missing_ok=True)
            removed += 1
        if removed:
            log.info("%s: removed %d leftovers of an interrupted run", self.root, removed)
        return status

    def _read_markers(self, markers: set[str]) -> pa.Table:
        """The items files' key columns; an unreadable one (damaged on disk) is removed, so its part is redone."""
        columns = ["path", "status", "hands", "part"]
        try:
            return read_parts(self.items_dir, ITEMS_SCHEMA, columns)
        except (OSError, pa.ArrowException):
            tables = []
            for name in sorted(markers):
                try:
                    tables.append(pq.read_table(self.items_dir / f"{name}.parquet", columns=columns))
                except (OSError, pa.ArrowException) as e:
                    log.warning("%s: %s is unreadable (%s); its part will be redone", self.root, name, e)
                    (self.items_dir / f"{name}.parquet").unlink()
                    markers.discard(name)
            return pa.concat_tables(tables) if tables else ITEMS_SCHEMA.empty_table().select(columns)

    def items(self) -> pa.Table:
        """The status rows of every committed part."""
        return read_parts(self.items_dir, ITEMS_SCHEMA)

    def hands(self, columns: list[str] | None = None) -> pa.Table:
        """The hand rows of every committed part (safe to call while a run is writing)."""
        run = self.read_run() or {}
        schema = hands_schema(bool((run.get("settings") or {}).get("vertices")))
        done = {p.stem for p in self.items_dir.glob("part-*.parquet")}
        return read_parts(self.hands_dir, schema, columns, done)


def read_hands(out: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """The hand rows of an annotation folder (committed parts only; safe while a run is writing)."""
    return Output(out).hands(columns)


def read_items(out: str | os.PathLike) -> pa.Table:
    """The item status rows of an annotation folder."""
    return Output(out).items()
