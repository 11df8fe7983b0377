"""What to annotate: command-line inputs and manifests -> items -> parts (the units committed together).

    items, dropped = expand_inputs(["photos/", "clips/a.mp4", "list.csv"])
    parts = plan_parts(items, batch_size=16, images_per_part=64, done=set())

An item is one image or one video. Its `source` is the path as given (folders: the folder as given joined
with the file's path inside it; manifests: the entry as written; the absolute path where two different files
would share one) and its `path` the absolute path that is read; items are deduplicated by `path`, first
occurrence kept. Manifest entries are relative to the
manifest's folder, and are not checked here (a missing one becomes a `failed` row): on a cluster the files
may be visible only to the workers.

A part is a run of consecutive images or a single video. Parts are cut from the whole item list, before the
items already committed are left out, so an interrupted run that resumes re-forms the same parts (the same
images in the same model batches, hence bit-identical rows).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow.parquet as pq

from ..pipeline.images import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts")
MANIFEST_SUFFIXES = (".txt", ".csv", ".parquet")


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def key_of(path: str) -> str:
    """An item's identity in an annotation folder: a digest of its absolute path."""
    return _digest(path)


@dataclasses.dataclass(frozen=True)
class Item:
    source: str  # as given
    path: str  # absolute, read by the workers
    kind: str  # "image" | "video"

    @property
    def key(self) -> str:
        return key_of(self.path)


@dataclasses.dataclass(frozen=True)
class Part:
    """Items committed together: one Parquet file in hands/ and one in items/, both named `name`."""

    kind: str  # "images" | "video"
    items: tuple[Item, ...]

    @property
    def name(self) -> str:
        return f"part-{_digest(' '.join(i.key for i in self.items))}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "items": [dataclasses.asdict(i) for i in self.items]}

    @classmethod
    def from_dict(cls, d: dict) -> "Part":
        return cls(d["kind"], tuple(Item(**i) for i in d["items"]))


def kind_of(path: str) -> str:
    return "video" if Path(path).suffix.lower() in VIDEO_SUFFIXES else "image"


def _is_media(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES


def walk_folder(folder: str) -> list[str]:
    """Image and video files under `folder`, recursively, sorted; hidden files and folders skipped."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".") and _is_media(f)]
    return found


def read_manifest(path: str) -> list[str]:
    """The entries of a manifest: .txt (one path a line; blank lines and # comments skipped) or .csv / .parquet
    with a `path` column, in order, as written."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".txt":
        lines = p.read_text(encoding="utf-8").splitlines()
        return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    if suffix == ".csv":
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "path" not in (reader.fieldnames or []):
                found = ", ".join(reader.fieldnames or []) or "none"
                raise ValueError(f"{p}: a CSV manifest needs a 'path' column (found: {found})")
            return [r["path"].strip() for r in reader if (r["path"] or "").strip()]
    if suffix == ".parquet":
        names = pq.read_schema(p).names
        if "path" not in names:
            raise ValueError(f"{p}: a Parquet manifest needs a 'path' column (found: {', '.join(names)})")
        paths = pq.read_table(p, columns=["path"]).column("path").to_pylist()
        return [str(s).strip() for s in paths if s is not None and str(s).strip()]
    raise ValueError(f"{p}: a manifest must be .txt, .csv or .parquet")


def _from_manifest(manifest: str) -> Iterable[tuple[str, str]]:
    base = os.path.dirname(os.path.abspath(manifest))
    for entry in read_manifest(manifest):
        full = os.path.normpath(os.path.join(base, os.path.expanduser(entry)))
        if not _is_media(entry) and os.path.isdir(full):
            yield from ((os.path.join(entry, os.path.relpath(f, full)), f) for f in walk_folder(full))
        else:
            yield entry, full


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Item], int]:
    """Command-line INPUTS -> (items in order, number of duplicates dropped).

    A file or folder named on the command line must exist (one FileNotFoundError naming it, before any
    work starts); a folder must hold at least one image or video.
    """
    pairs: list[tuple[str, str]] = []
    for s in inputs:
        p = Path(s).expanduser()
        if p.is_dir():
            files = walk_folder(str(p))
            if not files:
                looked = ", ".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)
                raise ValueError(f"{s}: no images or videos in this folder (looked for {looked})")
            pairs += [(os.path.join(s, os.path.relpath(f, p)), os.path.abspath(f)) for f in files]
        elif not p.exists():
            raise FileNotFoundError(f"{s}: no such file or folder")
        elif p.suffix.lower() in MANIFEST_SUFFIXES:
            pairs += list(_from_manifest(str(p)))
        else:
            pairs.append((s, os.path.abspath(p)))
    items, seen, sources = [], set(), set()
    for source, path in pairs:
        if path not in seen:
            seen.add(path)
            if source in sources:  # the same relative entry in two manifests: the rows need a unique source
                source = path
            sources.add(source)
            items.append(Item(source, path, kind_of(path)))
    return items, len(pairs) - len(items)


def part_size(batch_size: int, images_per_part: int) -> int:
    """Images per part: images_per_part rounded up to whole model batches (so that batches never straddle parts)."""
    return batch_size * max(1, -(-images_per_part // batch_size))


def plan_parts(items: Sequence[Item], *, batch_size: int, images_per_part: int, done: set[str]) -> list[Part]:
    """Cut the items into parts (videos first: the long tasks start early), leaving out items whose key is in
    `done`. The cut is made on the full list, so the parts of a resumed run are those of the first run."""
    size = part_size(batch_size, images_per_part)
    images = [i for i in items if i.kind == "image"]
    parts = [Part("video", (i,)) for i in items if i.kind == "video" and i.key not in done]
    for start in range(0, len(images), size):
        todo = tuple(i for i in images[start:start + size] if i.key not in done)
        if todo:
            parts.append(Part("images", todo))
    return parts
