"""What every kernel launcher needs to know about where its kernel runs.

Triton either compiles a kernel for the GPU or runs it in its interpreter on CPU tensors
(TRITON_INTERPRET=1, which `kernels/__init__.py` sets before triton is imported when there
is no CUDA device). Triton fixes that choice when a kernel is decorated, so it is read once
here, at import, and every launcher asks `INTERPRETED` instead of the environment.
"""
import functools
import os

import torch
import triton

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

MIN_DOT = 16  # the smallest side of a tl.dot tile the NVIDIA backend accepts
CPU_SM_COUNT = 16  # a stand-in when no GPU is present, so grid heuristics run the same code


@functools.lru_cache(maxsize=None)
def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (CPU_SM_COUNT elsewhere)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return CPU_SM_COUNT


def dot_block(n: int) -> int:
    """A tl.dot tile side holding n: the next power of two, at least MIN_DOT."""
    return max(MIN_DOT, triton.next_power_of_2(n))


def dot_settings(dtype: torch.dtype) -> dict:
    """Constexprs of the attention kernels' tl.dot for inputs of `dtype`.

    UPCAST: the interpreter's bf16 dot is wrong, so there bf16 operands go through fp32.
    PRECISION: fp32 inputs keep full precision ("ieee", no tf32 rounding); 16-bit inputs
    use the tensor cores ("tf32" is ignored for them).
    """
    return dict(
        UPCAST=INTERPRETED and dtype == torch.bfloat16,
        PRECISION="ieee" if dtype == torch.float32 else "tf32",
    )


def unit_stride(t: torch.Tensor) -> torch.Tensor:
    """t itself when its last dimension is contiguous (the kernels step along it with unit
    stride and take the other strides as arguments), else a contiguous copy."""
    return t if t.stride(-1) == 1 else t.contiguous()
