"""One-way converters into the canonical folder (config.json + model.safetensors + mano.safetensors, see
mlx_hands.weights): the original files (Lightning .ckpt, ultralytics .pt, MANO .pkl), the predecessor
project's single-file weights, and quantized or re-typed copies of a converted folder (convert.quantized).

The readers are numpy only (never torch, chumpy or ultralytics); the last step writes through
mlx_hands.weights. Nothing here runs at load time: mlx_hands.hub converts once and caches.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..config import CONFIG_FILE, MANO_FILE, ORIGINAL_FILES, SEED_FILES, DetectorConfig, WiLoRConfig
from ..models.wilor import WiLoR
from ..quant import check_settings, quantize_arrays
from ..weights import load_config, parameter_shapes, read_arrays_np, save_mano, save_model
from .mano import read_mano, read_mano_mean_params
from .safe_pickle import load_torch_file
from .seed import inspect_arrays, read_seed, seed_mano, split_seed
from .wilor import convert_wilor_state, infer_config
from .yolo import convert_detector

log = logging.getLogger(__name__)


def find_originals(src: str | Path) -> dict[str, Path]:
    """Role -> path of the original files in `src` or `src/pretrained_models/` (WiLoR-mini's layout); a
    predecessor file (wilor-mlx*.safetensors) takes the role "seed". `src` may also be one such file."""
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    if src.is_file():
        roles = {".ckpt": "checkpoint", ".pt": "detector", ".safetensors": "seed"}
        return {roles[src.suffix]: src} if src.suffix in roles else {}
    found = {}
    for folder in (src, src / "pretrained_models", src / "mano_data"):
        for role, name in ORIGINAL_FILES.items():
            if role not in found and (folder / name).is_file():
                found[role] = folder / name
    if "checkpoint" not in found:
        seed = next((src / n for n in SEED_FILES if (src / n).is_file()), None)
        if seed is not None:
            found["seed"] = seed
    return found


def convert(
    src: str | Path | None,
    dst: str | Path,
    *,
    checkpoint: str | Path | None = None,
    mean_params: str | Path | None = None,
    mano: str | Path | None = None,
    detector: str | Path | None = None,
    seed: str | Path | None = None,
    dtype: str = "float32",
    config: WiLoRConfig | None = None,
    q_bits: int | None = None,
    q_group_size: int = 64,
    q_uniform: bool = False,
) -> Path:
    """Convert whatever originals are given (a folder `src` and/or explicit files) into `dst`.

    At least one of checkpoint, seed, detector or MANO must be found. MANO alone adds mano.safetensors to an
    existing converted folder. A predecessor file (`seed`: wilor-mlx.safetensors, its int4 variant) takes
    the checkpoint's place. q_bits (4 or 8) quantizes the WiLoR transformer linears with group size
    q_group_size (mlx_hands.quant; the most sensitive layers stay at higher precision unless q_uniform);
    the rest stays in `dtype`.
    """
    if q_bits is not None:
        check_settings(q_bits, q_group_size)
    files = find_originals(src) if src is not None else {}
    given = {"checkpoint": checkpoint, "mean_params": mean_params, "mano": mano, "detector": detector, "seed": seed}
    for role, path in given.items():
        if path is not None:
            if not Path(path).is_file():
                raise FileNotFoundError(f"{role} file not found: {path}")
            files[role] = Path(path)
    if not {"checkpoint", "seed", "detector", "mano"} & set(files):
        where = f" in {src}" if src is not None else ""
        raise FileNotFoundError(f"nothing to convert{where}: expected {', '.join(ORIGINAL_FILES.values())}")
    dst = Path(dst)
    source = {role: str(p) for role, p in files.items()}

    wilor = wilor_config = det = det_config = quantization = None
    mano_arrays = read_mano(files["mano"]) if "mano" in files else None
    if "checkpoint" in files:
        ckpt = load_torch_file(files["checkpoint"])
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{files['checkpoint']}: expected a checkpoint dict with a 'state_dict'")
        wilor_config = infer_config(state, config or WiLoRConfig())
        means = read_mano_mean_params(files["mean_params"]) if "mean_params" in files else None
        wilor = convert_wilor_state(state, parameter_shapes(WiLoR(wilor_config)), means,
                                    source=str(files["checkpoint"]))
    elif "seed" in files:
        wilor, raw_mano = split_seed(read_seed(files["seed"]), str(files["seed"]))
        wilor_config = infer_config(wilor, config or WiLoRConfig())
        quantization = inspect_arrays(wilor, wilor_config, str(files["seed"]))
        if mano_arrays is None:
            mano_arrays = seed_mano(raw_mano, str(files["seed"]))
    if "detector" in files:
        det, det_config = convert_detector(files["detector"])

    if wilor is not None or det is not None:
        if (dst / CONFIG_FILE).is_file() and (wilor is None or det is None):
            # keep what an earlier conversion wrote for the other network
            old = load_config(dst)
            if wilor is None and "wilor" in old:
                wilor, wilor_config = read_arrays_np(dst, "wilor."), WiLoRConfig.from_dict(old["wilor"])
                quantization = old.get("quantization")
            if det is None and "detector" in old:
                det, det_config = read_arrays_np(dst, "detector."), DetectorConfig.from_dict(old["detector"])
        if q_bits is not None and wilor is not None:
            if quantization:
                raise ValueError(f"the WiLoR weights are already quantized ({quantization['bits']}-bit, group size "
                                 f"{quantization['group_size']}); convert without -q/--q-bits")
            wilor, quantization = quantize_arrays(wilor, wilor_config, q_bits, q_group_size, dtype, uniform=q_uniform)
        save_model(dst, wilor=wilor, wilor_config=wilor_config, detector=det, detector_config=det_config,
                   dtype=dtype, source=source, quantization=quantization)
    elif not (dst / CONFIG_FILE).is_file():
        log.warning("%s holds only MANO; convert the WiLoR checkpoint into it too", dst)
    if mano_arrays is not None:
        save_mano(mano_arrays, dst / MANO_FILE, source=files.get("mano", files.get("seed")))
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
