"""The background kernel compile that mlx_hands.kernel_cache.Warmup starts:

    python -m mlx_hands.warm_job <cache>/mlx-hands/warm/job-<hash>.json

For each network of the job whose kernels are not marked warm yet: build a random-weight copy from its spec (the
compiled kernels depend on the graph and the dtypes, not on the weights), run its compiled forward into a private
kernel folder seeded from the shared cache, copy the new files into the shared cache (whole files only), write the
marker. One job at a time (a lock file).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .config import DetectorConfig, WiLoRConfig
from .kernel_cache import (
    DETECTOR_SHAPES,
    WILOR_BATCHES,
    copy_new,
    detect,
    forward,
    is_warm,
    kernel_files,
    locked,
    mark_warm,
    warm_dir,
)
from .models import kernels
from .synthetic import random_detector, random_mano, random_model


def build(spec: dict):
    """A random-weight network with the same compiled kernels as the one `spec` describes (kernel_cache.model_spec)."""
    if spec["kind"] == "wilor":
        config = WiLoRConfig.from_dict(spec["config"])
        model = random_model(config, spec["dtype"])
        mano = random_mano(config.mano)
        mano["parents"] = np.array(spec["parents"], np.int32)
        model.mano.set_data(mano)
        model.backbone.fuse_add_norm = spec["fuse_add_norm"]
        model.refine_net.deconv.deconv_gemm = spec["deconv_gemm"]
        return model
    return random_detector(spec["dtype"], DetectorConfig.from_dict(spec["config"]))


def run_job(job_file: Path) -> int:
    job = json.loads(Path(job_file).read_text())
    shared = Path(job["cache"])
    with locked(warm_dir(shared) / "lock"):
        todo = [m for m in job["models"] if not is_warm(shared, m["signature"])]
        if not todo:
            return 0
        private = Path(tempfile.mkdtemp(prefix="mlx-hands-kernels-"))
        try:
            copy_new(shared, private)
            os.environ["MLX_PTX_CACHE_DIR"] = str(private)  # before this process's first JIT compile
            for m in todo:
                spec = {k: v for k, v in m.items() if k != "signature"}
                with kernels.disabled(*(set(kernels.NAMES) - set(spec.get("kernels", kernels.NAMES)))):
                    module = build(spec)
                    module.compile = True
                    before = kernel_files(private)
                    t = time.perf_counter()
                    if spec["kind"] == "wilor":
                        for b in WILOR_BATCHES:
                            forward(module, b)
                    else:
                        for shape in DETECTOR_SHAPES:
                            detect(module, shape)
                    seconds = time.perf_counter() - t
                new = copy_new(private, shared)
                mark_warm(shared, m["signature"], spec, seconds, kernel_files(private) - before)
                print(f"{spec['kind']}: {seconds:.1f} s, {len(new)} new files", flush=True)
        finally:
            shutil.rmtree(private, ignore_errors=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sys.exit(run_job(Path(sys.argv[1])))
