"""Triton kernels for duodecode; `kernels.reference` holds the plain-torch twin of each.

Without a CUDA device the kernels run in Triton's interpreter on CPU tensors. The
interpreter is chosen when the kernels are decorated, so TRITON_INTERPRET is set here,
before any kernel module imports triton.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Bound eagerly: each module shares its function's name, and binding the function after
# the module import keeps `kernels.decode_attention` the function even when someone later
# imports the submodule itself.
from .activations import gelu, silu_and_mul  # noqa: E402
from .confidence import confidence_argmax  # noqa: E402
from .decode_attention import decode_attention  # noqa: E402
from .norm_linear import rms_norm_linear  # noqa: E402
from .norms import layer_norm, rms_norm  # noqa: E402
from .prefill_attention import paged_prefill_attention, prefill_attention  # noqa: E402
from .rotary import rotary_embedding, rotary_store_kv  # noqa: E402
from .sampling import sample  # noqa: E402
from .store_kv import store_kv  # noqa: E402

__all__ = [
    "store_kv",
    "decode_attention",
    "prefill_attention",
    "paged_prefill_attention",
    "rms_norm",
    "rms_norm_linear",
    "layer_norm",
    "rotary_embedding",
    "rotary_store_kv",
    "silu_and_mul",
    "gelu",
    "sample",
    "confidence_argmax",
]
