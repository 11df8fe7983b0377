"""Where models come from: one resolver and one loader for every source.

`resolve(source)` turns any source into a converted folder (mlx_hands.weights):

- None: the Hub repository warmshao/WiLoR-mini (its pretrained_models/ folder: the original files);
- a converted folder (config.json + model.safetensors): used as it is;
- a folder of the original files (or WiLoR-mini's checkout, or a single .ckpt): converted once;
- the predecessor project's file (wilor-mlx.safetensors, wilor-mlx-int4.safetensors), a folder holding one,
  its Hub repository "BasinShapers/wilor-mlx" or a Hub file "owner/name/file.safetensors": converted once;
- any other Hub repository id "owner/name" holding the original files: downloaded, converted once.

Downloads go through huggingface_hub (its cache, HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE apply); files
already in its cache are used without asking the network. Conversions are cached under
mlx_hands.settings.cache_dir(), keyed on every source file (name, size, modification time), so a changed or
added file converts again. `load(source)` resolves once and builds the networks; WiLoR.from_pretrained and
HandPosePipeline.from_pretrained both go through it.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from huggingface_hub import constants, hf_hub_download

from .config import CONFIG_FILE, MANO_FILE, MODEL_FILE, ORIGINAL_FILES, SEED_FILES
from .convert import convert_atomically, find_originals
from .convert.mano import read_mano
from .blas import check_cpu_blas
from .kernel_cache import install as install_kernel_cache
from .models.wilor import WiLoR as WiLoRNetwork
from .transfer import cpu_device
from .settings import cache_dir, hub_offline
from .weights import load_config, load_detector, load_wilor, save_mano

log = logging.getLogger(__name__)

DEFAULT_REPO = "warmshao/WiLoR-mini"
SUBFOLDER = "pretrained_models"
SEED_REPOS = ("BasinShapers/wilor-mlx",)
PROBE_TIMEOUT = 5.0  # seconds for the Hub to answer one request before we give up (no retries)


# ---------------------------------------------------------------- downloads


def _reachable(repo_id: str, name: str, subfolder: str | None, revision: str | None) -> str | None:
    """None when the Hub answers a HEAD request for the file within PROBE_TIMEOUT (any HTTP status: a missing or
    gated file is huggingface_hub's to report), else why not, in a few words. huggingface_hub itself retries an
    unanswering Hub for minutes; this is asked first so that an offline machine fails at once."""
    path = "/".join(p for p in (subfolder, name) if p)
    url = f"{constants.ENDPOINT}/{repo_id}/resolve/{quote(revision or 'main', safe='')}/{path}"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return f"{constants.ENDPOINT} did not answer: {getattr(reason, 'strerror', None) or reason}"
    return None


def _offline_help(repo_id: str, names: list[str], subfolder: str | None, why: str) -> str:
    where = f"https://huggingface.co/{repo_id}/tree/main" + (f"/{subfolder}" if subfolder else "")
    return (f"could not download {', '.join(names)} from the Hugging Face Hub ({why}). Download them from {where} "
            f"into a folder, then run: mlx-hands predict IMAGE --model FOLDER")


def download(repo_id: str, names: list[str], *, subfolder: str | None = None, revision: str | None = None
             ) -> dict[str, Path]:
    """hf_hub_download of known file names -> name: local path. Files in huggingface_hub's cache are used
    without the network; otherwise an unreachable Hub (or HF_HUB_OFFLINE=1) fails at once with one message
    that names the files and the command to run once they are downloaded by hand."""
    files, missing = {}, []
    for name in names:
        try:
            files[name] = Path(hf_hub_download(repo_id, name, subfolder=subfolder, revision=revision,
                                               local_files_only=True))
        except Exception:  # not in the cache (huggingface_hub raises several types for that)
            missing.append(name)
    if not missing:
        return files
    if hub_offline():
        raise FileNotFoundError(_offline_help(repo_id, missing, subfolder, "HF_HUB_OFFLINE is set and they are not "
                                              "in the Hub cache"))
    why = _reachable(repo_id, missing[0], subfolder, revision)
    if why:
        raise FileNotFoundError(_offline_help(repo_id, missing, subfolder, why))
    for name in missing:
        log.info("downloading %s from %s", name, repo_id)
        try:
            files[name] = Path(hf_hub_download(repo_id, name, subfolder=subfolder, revision=revision))
        except Exception as e:  # offline, gated, missing, rate-limited: all end in the same advice
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FileNotFoundError(_offline_help(repo_id, [n for n in missing if n not in files], subfolder,
                                                  first[:200])) from None
    return files


# ---------------------------------------------------------------- resolving


def _key(files: dict[str, Path]) -> str:
    """A cache key over every source file: its role, real path, size and modification time."""
    h = hashlib.sha1()
    for role in sorted(files):
        p = Path(files[role]).resolve()
        st = p.stat()
        h.update(f"{role}:{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _converted(files: dict[str, Path], name: str) -> Path:
    """The cached conversion of `files` (made now if missing)."""
    dst = cache_dir() / f"{name}-{_key(files)}"
    if not (dst / CONFIG_FILE).is_file():
        log.warning("converting %s into %s (once)", ", ".join(p.name for p in files.values()), dst)
        convert_atomically(dst, src=None, **{role: path for role, path in files.items()})
    return dst


def _hub_source(target: str, revision: str | None) -> tuple[dict[str, Path], str]:
    """A Hub id -> (role: downloaded file, cache name)."""
    parts = target.split("/")
    if len(parts) == 3 and parts[2].endswith(".safetensors"):
        repo = "/".join(parts[:2])
        return {"seed": download(repo, [parts[2]], revision=revision)[parts[2]]}, target.replace("/", "--")
    if target.lower() in {r.lower() for r in SEED_REPOS}:
        return {"seed": download(target, [SEED_FILES[0]], revision=revision)[SEED_FILES[0]]}, target.replace("/", "--")
    names = list(ORIGINAL_FILES.values())
    got = download(target, names, subfolder=SUBFOLDER, revision=revision)
    return {role: got[name] for role, name in ORIGINAL_FILES.items()}, target.replace("/", "--")


def resolve(source: str | Path | None = None, *, revision: str | None = None) -> Path:
    """A converted folder for `source` (module docstring), converting and downloading at most once."""
    target = str(source) if source is not None else DEFAULT_REPO
    local = Path(target).expanduser()
    if local.exists():
        if local.is_dir() and (local / CONFIG_FILE).is_file():
            return local
        files = find_originals(local)
        if not {"checkpoint", "seed"} & set(files):
            raise FileNotFoundError(
                f"{local} is neither a converted mlx-hands model (no {CONFIG_FILE}) nor a folder with the original "
                f"{ORIGINAL_FILES['checkpoint']} (or a wilor-mlx .safetensors file)")
        return _converted(files, f"local/{local.resolve().name}")
    if target.count("/") in (1, 2) and not target.startswith((".", "/", "~")) and " " not in target:
        files, name = _hub_source(target, revision)
        return _converted(files, name)
    raise FileNotFoundError(f"{target} is neither an existing path nor a Hub repository id (owner/name)")


def resolve_mano(path: str | Path) -> Path:
    """A converted mano.safetensors for `path`: used as is, or MANO_RIGHT.pkl / .npz converted once into the cache."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"MANO file not found: {path}")
    if path.suffix == ".safetensors":
        return path
    dst = cache_dir() / "mano" / _key({"mano": path}) / MANO_FILE
    if not dst.is_file():
        save_mano(read_mano(path), dst, source=path)
    return dst


# ---------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    """What load() returns: the networks and where they came from."""

    wilor: Any  # mlx_hands.WiLoR
    detector: Any | None  # mlx_hands.models.yolo.YOLOPose, or None
    path: Path  # the converted folder
    info: dict = field(default_factory=dict)  # identity for result files (model_info)


def model_info(source, path: Path, model) -> dict[str, Any]:
    """Identity of the loaded weights for result files: what was asked, where it was found, the Hub revision,
    the stored dtype and quantization, the source files."""
    info: dict[str, Any] = {"model": None if source is None else str(source), "path": str(path.resolve())}
    config = load_config(path)
    src = config.get("source") or {}
    for p in [str(path.resolve()), *map(str, src.values())]:
        parts = Path(p).parts
        if "snapshots" in parts and parts.index("snapshots") + 1 < len(parts):  # huggingface_hub cache layout
            info["revision"] = parts[parts.index("snapshots") + 1]
            break
    f = path / MODEL_FILE
    if f.is_file():
        info["model_bytes"] = f.stat().st_size
    if src:
        info["source"] = src
    info["dtype"] = str(model.dtype).replace("mlx.core.", "")
    info["quantization"] = config.get("quantization")
    return info


def load(source: str | Path | None = None, *, mano_path: str | Path | None = None, dtype: str | None = None,
         quantize=None, revision: str | None = None, detector: bool = True, wilor_class=None) -> LoadedModel:
    """Resolve `source` once (see resolve) and build WiLoR (+ the hand detector unless detector=False).

    mano_path: MANO_RIGHT.pkl or a converted mano.safetensors, when the folder has none. dtype casts the float
    weights (float32, float16, bfloat16); quantize (4, 8 or {"bits", "group_size", "calibration"}) quantizes a
    float model after loading. The stored precision is used otherwise.
    """
    path = resolve(source, revision=revision)
    if cpu_device():
        check_cpu_blas()  # warns, with the fix, when MLX multiplies with the slow reference BLAS
    mano_file = resolve_mano(mano_path) if mano_path is not None else None
    wilor = load_wilor(path, mano_file=mano_file, dtype=dtype, quantize=quantize, cls=wilor_class or WiLoR)
    det = load_detector(path, dtype=dtype) if detector else None
    if detector and det is None:
        log.warning("%s holds no hand detector: only caller-given boxes will work", path)
    # on CUDA: the kernel cache under our cache folder, and the first compile in the background
    install_kernel_cache(wilor, det)
    return LoadedModel(wilor, det, path, model_info(source, path, wilor))


class WiLoR(WiLoRNetwork):
    """The WiLoR network (mlx_hands.models.wilor.WiLoR) with `from_pretrained`."""

    @classmethod
    def from_pretrained(cls, source: str | Path | None = None, *, mano_path=None, dtype: str | None = None,
                        quantize=None, revision: str | None = None) -> "WiLoR":
        """load(source, ..., detector=False).wilor: any source mlx_hands.hub.resolve accepts."""
        return load(source, mano_path=mano_path, dtype=dtype, quantize=quantize, revision=revision,
                    detector=False, wilor_class=cls).wilor
