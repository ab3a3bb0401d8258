"""Kernel backends: the Triton kernels (`kernels`) or their torch references."""
import kernels
from kernels import reference

BACKENDS = ("triton", "torch")


def default_backend(device: str) -> str:
    """Triton on CUDA; the torch references on CPU, where Triton only runs interpreted."""
    return "triton" if str(device).startswith("cuda") else "torch"


def get_ops(name: str):
    """The module whose functions (store_kv, decode_attention, ...) a model calls."""
    if name not in BACKENDS:
        raise ValueError(f"kernel_backend must be one of {BACKENDS}, got {name!r}")
    return kernels if name == "triton" else reference
