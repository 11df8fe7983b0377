"""Where models come from: a converted directory, a folder of original files, or a Hub repository.

The original WiLoR files are downloaded with huggingface_hub (its cache, HF_HOME/HF_HUB_CACHE and
HF_HUB_OFFLINE apply) and converted once into the mlx-hands cache:

    $MLX_HANDS_CACHE, else $XDG_CACHE_HOME/mlx-hands, else ~/.cache/mlx-hands
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .convert import ORIGINAL_FILES, convert, convert_atomically, find_originals
from .weights import CONFIG_FILE, MANO_FILE

log = logging.getLogger(__name__)

DEFAULT_REPO = "warmshao/WiLoR-mini"
SUBFOLDER = "pretrained_models"


def cache_dir() -> Path:
    if os.environ.get("MLX_HANDS_CACHE"):
        return Path(os.environ["MLX_HANDS_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "mlx-hands"


def is_converted(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def _manual_instructions(repo_id: str, missing: list[str]) -> str:
    folder = cache_dir() / "originals"
    return (f"download {', '.join(missing)} from https://huggingface.co/{repo_id}/tree/main/{SUBFOLDER} "
            f"into a folder (e.g. {folder}) and pass that folder: from_pretrained('{folder}') or "
            f"`mlx-hands predict IMAGE --model {folder}`")


def download_originals(repo_id: str, *, revision: str | None = None, detector: bool = True) -> dict[str, Path]:
    """hf_hub_download of the original files; one clear error if the Hub and its cache both fail."""
    from huggingface_hub import hf_hub_download

    roles = ["checkpoint", "mean_params", "mano"] + (["detector"] if detector else [])
    files, errors = {}, {}
    for role in roles:
        name = ORIGINAL_FILES[role]
        try:
            files[role] = Path(hf_hub_download(repo_id, name, subfolder=SUBFOLDER, revision=revision))
        except Exception as e:  # offline, unreachable, gated, missing: all end in the same advice
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if errors:
        first = next(iter(errors.items()))
        raise FileNotFoundError(
            f"could not get {', '.join(errors)} from the Hub repository {repo_id} "
            f"(nothing cached either; {first[0]}: {first[1]}). Without network access, "
            + _manual_instructions(repo_id, list(errors)))
    return files


def _snapshot_id(path: Path) -> str:
    parts = path.parts
    if "snapshots" in parts:
        return parts[parts.index("snapshots") + 1][:12]
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def _has(dst: Path, part: str) -> bool:
    import json

    try:
        return part in json.loads((dst / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False


def resolve(path_or_repo: str | Path | None = None, *, revision: str | None = None, detector: bool = True) -> Path:
    """A converted model directory for `path_or_repo` (default: the WiLoR-mini Hub repository).

    Original files are converted once into cache_dir(); with detector=True a cached conversion that
    lacks the detector gets it added.
    """
    target = str(path_or_repo) if path_or_repo is not None else DEFAULT_REPO
    local = Path(target).expanduser()
    if local.exists():
        if local.is_dir() and is_converted(local):
            return local
        files = find_originals(local)
        if "checkpoint" not in files:
            raise FileNotFoundError(
                f"{local} is neither a converted mlx-hands model (no {CONFIG_FILE}) nor a folder with the "
                f"original {ORIGINAL_FILES['checkpoint']}")
        dst = cache_dir() / "local" / f"{local.resolve().name}-{_snapshot_id(files['checkpoint'])}"
    elif target.count("/") == 1 and not target.startswith((".", "/", "~")):
        files = download_originals(target, revision=revision, detector=detector)
        dst = cache_dir() / f"{target.replace('/', '--')}--{_snapshot_id(files['checkpoint'])}"
    else:
        raise FileNotFoundError(f"{target} is neither an existing path nor a Hub repository id (owner/name)")
    if not is_converted(dst):
        log.info("converting %s into %s (once)", target, dst)
        convert_atomically(dst, src=None, checkpoint=files["checkpoint"], mean_params=files.get("mean_params"),
                           mano=files.get("mano"), detector=files.get("detector") if detector else None)
    elif detector and "detector" in files and not _has(dst, "detector"):
        log.info("adding the detector to %s", dst)
        convert(None, dst, detector=files["detector"])
    return dst
