"""Check and time the memory-bound kernels: rms_norm, layer_norm (with and without the fused
residual add), rotary_embedding, silu_and_mul and gelu, each against torch eager.

Bytes are what each kernel must at least read and write once; flops are reported as 0
because none of this work runs on the tensor cores the roofline's compute ceiling describes
(these kernels are judged against HBM bandwidth alone).
"""
import torch
import torch.nn.functional as F

import kernels
from kernels import reference

from . import rel_err, result_row, tolerance

EPS = 1e-5


def _shapes(quick):
    if quick:
        return {"norm": (8, 80), "rotary": (4, 4, 2, 32), "gated": (4, 96), "gelu": (4, 160)}
    # A 16k-token prefill of a Llama-8B-shaped layer; GELU at a BERT-large MLP width.
    return {"norm": (16384, 4096), "rotary": (16384, 32, 8, 128), "gated": (8192, 2 * 14336),
            "gelu": (16384, 4096)}


def _row(kernel, shape, dtype, outs, refs, run, baseline_name, baseline, bytes_moved, timer):
    outs = outs if isinstance(outs, tuple) else (outs,)
    refs = refs if isinstance(refs, tuple) else (refs,)
    err = max(rel_err(o, r) for o, r in zip(outs, refs))
    return result_row(kernel, shape, dtype, err, tolerance(dtype), run, baseline_name, baseline, timer, bytes_moved)


def _norm_rows(device, dtype, shape, timer):
    rows, hidden = shape
    x = torch.randn(shape, device=device, dtype=dtype)
    residual = torch.randn(shape, device=device, dtype=dtype)
    weight = torch.randn(hidden, device=device, dtype=dtype)
    bias = torch.randn(hidden, device=device, dtype=dtype)
    tensor_bytes, vector_bytes = x.numel() * x.element_size(), hidden * x.element_size()
    out = []
    for with_residual in (False, True):
        r = residual if with_residual else None
        # Plain: read x, write y.  Fused: read x and residual, write y and h.
        moved = tensor_bytes * (4 if with_residual else 2)
        suffix = "+residual" if with_residual else ""
        add = (lambda: x + residual) if with_residual else (lambda: x)
        out.append(_row(
            "rms_norm" + suffix, f"[{rows}, {hidden}]", dtype,
            kernels.rms_norm(x, weight, EPS, r), reference.rms_norm(x, weight, EPS, r),
            lambda r=r: kernels.rms_norm(x, weight, EPS, r),
            "add + F.rms_norm" if with_residual else "F.rms_norm",
            lambda add=add: F.rms_norm(add(), (hidden,), weight, EPS),
            moved + vector_bytes, timer,
        ))
        out.append(_row(
            "layer_norm" + suffix, f"[{rows}, {hidden}]", dtype,
            kernels.layer_norm(x, weight, bias, EPS, r), reference.layer_norm(x, weight, bias, EPS, r),
            lambda r=r: kernels.layer_norm(x, weight, bias, EPS, r),
            "add + F.layer_norm" if with_residual else "F.layer_norm",
            lambda add=add: F.layer_norm(add(), (hidden,), weight, bias, EPS),
            moved + 2 * vector_bytes, timer,
        ))
    return out


def _eager_rotary(q, k, positions, cos_cache, sin_cache):
    """HF-style rotate_half in the model dtype: the usual eager implementation."""
    cos = cos_cache[positions].to(q.dtype).repeat(1, 2)[:, None, :]
    sin = sin_cache[positions].to(q.dtype).repeat(1, 2)[:, None, :]

    def rotate(x):
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    return rotate(q), rotate(k)


def _rotary_row(device, dtype, shape, timer):
    tokens, hq, hkv, d = shape
    q = torch.randn(tokens, hq, d, device=device, dtype=dtype)
    k = torch.randn(tokens, hkv, d, device=device, dtype=dtype)
    angles = torch.rand(2 * tokens, d // 2, device=device) * 6.3
    cos, sin = angles.cos(), angles.sin()
    positions = torch.randperm(2 * tokens, device=device)[:tokens]
    args = (q, k, positions, cos, sin)
    # Read and write q and k once, read each token's position and its cos and sin rows.
    moved = 2 * (q.numel() + k.numel()) * q.element_size() + tokens * (positions.element_size() + 2 * 4 * d // 2)
    return _row(
        "rotary_embedding", f"T={tokens} Hq={hq} Hkv={hkv} D={d}", dtype,
        kernels.rotary_embedding(*args), reference.rotary_embedding(*args),
        lambda: kernels.rotary_embedding(*args), "eager rotate_half", lambda: _eager_rotary(*args),
        moved, timer,
    )


def _activation_rows(device, dtype, gated_shape, gelu_shape, timer):
    gated = torch.randn(gated_shape, device=device, dtype=dtype)
    half = gated_shape[-1] // 2
    out = [_row(
        "silu_and_mul", str(list(gated_shape)), dtype,
        kernels.silu_and_mul(gated), reference.silu_and_mul(gated),
        lambda: kernels.silu_and_mul(gated), "F.silu(gate) * up",
        lambda: F.silu(gated[..., :half]) * gated[..., half:],
        gated.numel() * gated.element_size() * 3 // 2, timer,
    )]
    x = torch.randn(gelu_shape, device=device, dtype=dtype)
    for approximate in ("none", "tanh"):
        out.append(_row(
            f"gelu[{approximate}]", str(list(gelu_shape)), dtype,
            kernels.gelu(x, approximate), reference.gelu(x, approximate),
            lambda a=approximate: kernels.gelu(x, a), "F.gelu",
            lambda a=approximate: F.gelu(x, approximate=a),
            2 * x.numel() * x.element_size(), timer,
        ))
    return out


def check(device, dtype, quick, timer):
    shapes = _shapes(quick)
    return (
        _norm_rows(device, dtype, shapes["norm"], timer)
        + [_rotary_row(device, dtype, shapes["rotary"], timer)]
        + _activation_rows(device, dtype, shapes["gated"], shapes["gelu"], timer)
    )
