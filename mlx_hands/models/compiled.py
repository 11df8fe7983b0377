"""mx.compile for the networks' forward passes: fused elementwise kernels and one graph replay per call
instead of Python building thousands of ops.

On a GPU it is on by default. On the CPU it is off by default: MLX compiles CPU kernels with the system
C++ compiler (seconds to tens of seconds for each new shape) for little gain next to the matrix products.
The compiled function takes the module itself as an implicit input, so it reads the current weights at
every call: loading weights, set_dtype and quantization are all seen; a new input shape or dtype traces
once more. MLX_HANDS_COMPILE=0 or 1 in the environment overrides the default (mlx_hands.settings).
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx

from ..settings import compile_override


def compile_enabled(setting: bool | None, training: bool) -> bool:
    """setting None: the environment's MLX_HANDS_COMPILE (0 or 1) if set, else compile on a GPU only.
    Never while training (BatchNorm and dropout change behaviour)."""
    if training:
        return False
    if setting is None:
        env = compile_override()
        if env is not None:
            return env
        return mx.default_device().type == mx.DeviceType.gpu
    return bool(setting)


class CompiledForward:
    """Compiled functions of one module, one per key of Python-level choices baked into a trace.

    gate: None, or gate(key) -> bool, set by whoever loads the module (mlx_hands.kernel_cache): False while the
    GPU kernels of that compiled forward are not in the kernel cache yet; the module then runs its forward
    without mx.compile (same results up to rounding), so that a first call does not wait for NVRTC.

    A deepcopy starts empty (compiled functions cannot be copied; no gate); the copy compiles its own on first use.
    """

    def __init__(self):
        self._fns: dict = {}
        self.gate: Callable[[tuple], bool] | None = None

    def __deepcopy__(self, memo):
        return CompiledForward()

    def ready(self, key=()) -> bool:
        """Whether to run the compiled forward for `key` now (see gate)."""
        return self.gate is None or self.gate(key)

    def get(self, fn: Callable, module, key=()) -> Callable:
        if key not in self._fns:
            self._fns[key] = mx.compile(fn, inputs=module)
        return self._fns[key]
