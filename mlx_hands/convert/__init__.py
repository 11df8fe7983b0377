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
# the seed project's single-file weights (lyonsno/wilor-mlx), see convert/seed.py
SEED_FILES = ("wilor-mlx.safetensors", "wilor-mlx-int4.safetensors")


def find_originals(src: str | Path) -> dict[str, Path]:
    """The original files found in `src` or `src/pretrained_models/` (WiLoR-mini's layout)."""
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
    dtype: str = "float32",
    config=None,
    q_bits: int | None = None,
    q_group_size: int = 64,
    q_uniform: bool = False,
) -> Path:
    """Convert whatever originals are given (a folder `src` and/or explicit files) into `dst`.

    At least one of checkpoint, detector or MANO must be found. MANO alone adds mano.safetensors to an
    existing converted directory. A seed-project file (wilor-mlx.safetensors, its int4 variant) takes
    the checkpoint's place. q_bits (4 or 8) quantizes the WiLoR transformer linears with group size
    q_group_size (mlx_hands.quantize; the most sensitive layers stay at higher precision unless
    q_uniform); the rest stays in `dtype`.
    """
    from ..config import WiLoRConfig
    from ..weights import CONFIG_FILE, MANO_FILE, load_config, save_model, wilor_shapes
    from .mano import read_mano, read_mano_mean_params, save_mano
    from .safe_pickle import load_torch_file
    from .wilor import convert_wilor_state, infer_config

    if q_bits is not None:
        from ..quantize import check_settings

        check_settings(q_bits, q_group_size)
    files = find_originals(src) if src is not None else {}
    for role, path in (("checkpoint", checkpoint), ("mean_params", mean_params), ("mano", mano), ("detector", detector)):
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
    seed_mano = None
    if "seed" in files and "checkpoint" not in files:
        from ..quantize import inspect_arrays
        from .seed import read_seed, seed_mano as read_seed_mano, split_seed

        wilor, raw_mano = split_seed(read_seed(files["seed"]), str(files["seed"]))
        wilor_config = infer_config(wilor, config or WiLoRConfig())
        quantization = inspect_arrays(wilor, wilor_config, str(files["seed"]))
        if "mano" not in files:
            seed_mano = read_seed_mano(raw_mano, str(files["seed"]))
    elif "checkpoint" in files:
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
                quantization = old.get("quantization")
            if det is None and "detector" in old:
                from ..config import DetectorConfig

                det, det_config = load_arrays_np(dst, "detector."), DetectorConfig.from_dict(old["detector"])
        if q_bits is not None and wilor is not None:
            if quantization:
                raise ValueError(f"the WiLoR weights are already quantized ({quantization['bits']}-bit, group size "
                                 f"{quantization['group_size']}); convert without -q/--q-bits")
            from ..quantize import quantize_arrays

            wilor, quantization = quantize_arrays(wilor, wilor_config, q_bits, q_group_size, dtype, uniform=q_uniform)
        save_model(dst, wilor=wilor, wilor_config=wilor_config, detector=det, detector_config=det_config,
                   dtype=dtype, source=source, quantization=quantization)
    elif not (dst / CONFIG_FILE).is_file():
        log.warning("%s holds only MANO; convert the WiLoR checkpoint into it too", dst)
    if "mano" in files:
        dst.mkdir(parents=True, exist_ok=True)
        save_mano(read_mano(files["mano"]), dst / MANO_FILE, source=files["mano"].name)
    elif seed_mano is not None:
        save_mano(seed_mano, dst / MANO_FILE, source=files["seed"].name)
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
