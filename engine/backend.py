"""Kernel backends: the Triton kernels (`kernels`) or their torch references.

The engine's layers call the kernels many times per step with tensors the engine itself
shaped, so they get each public function's `unchecked` body: the argument checks that guard
users at the `kernels.*` boundary run where the engine builds its buffers, not in every
layer of every step.
"""
from types import SimpleNamespace

import kernels
from engine.attention import ATTENTION_BACKENDS
from kernels import reference

BACKENDS = ("triton", "torch")


def default_backend(device: str) -> str:
    """Triton on CUDA; the torch references on CPU, where Triton only runs interpreted."""
    return "triton" if str(device).startswith("cuda") else "torch"


def get_ops(name: str) -> SimpleNamespace:
    """The kernel functions (rms_norm, sample, ...) a model calls, without checks, and the
    attention backend (`ops.attention`) its attention layers call."""
    if name not in BACKENDS:
        raise ValueError(f"kernel_backend must be one of {BACKENDS}, got {name!r}")
    module = kernels if name == "triton" else reference
    functions = {fn: getattr(module, fn).unchecked for fn in kernels.__all__}
    return SimpleNamespace(**functions, name=name, attention=ATTENTION_BACKENDS[name]())
