"""One-way converters from the original files (Lightning .ckpt, ultralytics .pt, MANO .pkl) to the
canonical directory (config.json + model.safetensors + mano.safetensors, see mlx_hands.weights).

The readers are numpy only (never torch, chumpy or ultralytics); the last step writes through
mlx_hands.weights.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

ORIGINAL_FILES = {
    "checkpoint": "wilor_final.ckpt",
    "mean_params": "mano_mean_params.npz",
    "mano": "MANO_RIGHT.pkl",
    "detector": "detector.pt",
}


def find_originals(src: str | Path) -> dict[str, Path]:
    """The original files found in `src` or `src/pretrained_models/` (WiLoR-mini's layout)."""
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    if src.is_file():
        return {"checkpoint": src} if src.suffix == ".ckpt" else {"detector": src} if src.suffix == ".pt" else {}
    found = {}
    for folder in (src, src / "pretrained_models", src / "mano_data"):
        for role, name in ORIGINAL_FILES.items():
            if role not in found and (folder / name).is_file():
                found[role] = folder / name
    return found


def convert(
    src: str | Path | None,
    dst: str | Path,
    *,
    checkpoint: str | Path | None = None,
    mean_params: str | Path | None = None,
    mano: str | Path | None = None,
    detector: str | Path | None = None,
    dtype: str = "float32",
    config=None,
) -> Path:
    """Convert whatever originals are given (a folder `src` and/or explicit files) into `dst`.

    At least one of checkpoint, detector or MANO must be found. MANO alone adds mano.safetensors to an
    existing converted directory.
    """
    from ..config import WiLoRConfig
    from ..weights import CONFIG_FILE, MANO_FILE, load_config, save_model, wilor_shapes
    from .mano import read_mano, read_mano_mean_params, save_mano
    from .safe_pickle import load_torch_file
    from .wilor import convert_wilor_state, infer_config

    files = find_originals(src) if src is not None else {}
    for role, path in (("checkpoint", checkpoint), ("mean_params", mean_params), ("mano", mano), ("detector", detector)):
        if path is not None:
            if not Path(path).is_file():
                raise FileNotFoundError(f"{role} file not found: {path}")
            files[role] = Path(path)
    if not {"checkpoint", "detector", "mano"} & set(files):
        where = f" in {src}" if src is not None else ""
        raise FileNotFoundError(f"nothing to convert{where}: expected {', '.join(ORIGINAL_FILES.values())}")
    dst = Path(dst)
    source = {role: str(p) for role, p in files.items()}

    wilor = wilor_config = det = det_config = None
    if "checkpoint" in files:
        ckpt = load_torch_file(files["checkpoint"])
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{files['checkpoint']}: expected a checkpoint dict with a 'state_dict'")
        wilor_config = infer_config(state, config or WiLoRConfig())
        means = read_mano_mean_params(files["mean_params"]) if "mean_params" in files else None
        wilor = convert_wilor_state(state, wilor_shapes(wilor_config), means, source=str(files["checkpoint"]))
    if "detector" in files:
        from .yolo import convert_detector

        det, det_config = convert_detector(files["detector"])

    if wilor is not None or det is not None:
        if (dst / CONFIG_FILE).is_file() and (wilor is None or det is None):
            # keep what an earlier conversion wrote for the other network
            from ..weights import load_arrays_np

            old = load_config(dst)
            if wilor is None and "wilor" in old:
                wilor, wilor_config = load_arrays_np(dst, "wilor."), WiLoRConfig.from_dict(old["wilor"])
            if det is None and "detector" in old:
                from ..config import DetectorConfig

                det, det_config = load_arrays_np(dst, "detector."), DetectorConfig.from_dict(old["detector"])
        save_model(dst, wilor=wilor, wilor_config=wilor_config, detector=det, detector_config=det_config,
                   dtype=dtype, source=source)
    elif not (dst / CONFIG_FILE).is_file():
        log.warning("%s holds only MANO; convert the WiLoR checkpoint into it too", dst)
    if "mano" in files:
        dst.mkdir(parents=True, exist_ok=True)
        save_mano(read_mano(files["mano"]), dst / MANO_FILE, source=files["mano"].name)
    return dst


def convert_atomically(dst: Path, **kwargs) -> Path:
    """convert() into a sibling temporary folder, then rename: a crash never leaves a half cache."""
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        convert(dst=tmp, **kwargs)
        shutil.rmtree(dst, ignore_errors=True)
        tmp.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst
