"""Output allocation for the Triton kernels.

Kernels allocate their outputs here. Tests set `poison = True` so that outputs start as NaN
(or -1 for integer outputs) instead of whatever memory held: an element a kernel forgets
to write then fails the comparison against the reference instead of passing by luck.
"""
import torch

poison = False


def empty(shape, dtype, device):
    if not poison:
        return torch.empty(shape, dtype=dtype, device=device)
    fill = float("nan") if dtype.is_floating_point else -1
    return torch.full(shape, fill, dtype=dtype, device=device)


def empty_like(t):
    return empty(t.shape, t.dtype, t.device)
