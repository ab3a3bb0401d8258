"""Triton kernels for duodecode; `kernels.reference` holds the plain-torch twin of each.

Without a CUDA device the kernels run in Triton's interpreter on CPU tensors. The
interpreter is chosen when the kernels are decorated, so TRITON_INTERPRET is set here,
before any kernel module imports triton. Kernel modules load on first use, so code that
only needs `kernels.reference` never imports triton.
"""
import importlib
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_KERNEL_MODULES = {
    "store_kv": "store_kv",
    "decode_attention": "decode_attention",
    "prefill_attention": "prefill_attention",
    "paged_prefill_attention": "prefill_attention",
    "rms_norm": "norms",
    "layer_norm": "norms",
    "rotary_embedding": "rotary",
    "silu_and_mul": "activations",
    "gelu": "activations",
    "sample": "sampling",
    "confidence_argmax": "confidence",
}

__all__ = list(_KERNEL_MODULES)


def __getattr__(name):
    if name not in _KERNEL_MODULES:
        raise AttributeError(f"module 'kernels' has no attribute {name!r}")
    module = importlib.import_module(f".{_KERNEL_MODULES[name]}", __name__)
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
