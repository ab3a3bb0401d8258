"""Check and time the memory-bound kernels: rms_norm, layer_norm (with and without the fused
residual add), rotary_embedding, silu_and_mul and gelu, each against torch eager, and
rotary_store_kv (bias, rotary and the cache store in one launch) against the two launches it
replaces (rotary_embedding + store_kv).

Bytes are what each kernel must at least read and write once; flops are reported as 0
because none of this work runs on the tensor cores the roofline's compute ceiling describes
(these kernels are judged against HBM bandwidth alone).
"""
import torch
import torch.nn.functional as F

import kernels
from kernels import reference

from ..kernel_cases import ACTIVATION, NORM, ROTARY
from . import rel_err, result_row, tolerance

EPS = 1e-5
BLOCK_SIZE = 16


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


def _rotary_inputs(tokens, hq, hkv, d, dtype, device):
    qkv = torch.randn(tokens, (hq + 2 * hkv) * d, device=device, dtype=dtype)
    q, k, v = (t.view(tokens, -1, d) for t in qkv.split([hq * d, hkv * d, hkv * d], dim=1))
    angles = torch.rand(2 * tokens, d // 2, device=device) * 6.3
    positions = torch.randperm(2 * tokens, device=device)[:tokens]
    return q, k, v, positions, angles.cos(), angles.sin()


def _rotary_rows(device, dtype, shape, timer):
    tokens, hq, hkv, d = shape
    q, k, v, positions, cos, sin = _rotary_inputs(tokens, hq, hkv, d, dtype, device)
    args = (q, k, positions, cos, sin)
    label = f"T={tokens} Hq={hq} Hkv={hkv} D={d}"
    # Read and write q and k once, read each token's position and its cos and sin rows.
    table_bytes = tokens * (positions.element_size() + 2 * 4 * d // 2)
    moved = 2 * (q.numel() + k.numel()) * q.element_size() + table_bytes
    rows = [_row(
        "rotary_embedding", label, dtype,
        kernels.rotary_embedding(*args), reference.rotary_embedding(*args),
        lambda: kernels.rotary_embedding(*args), "eager rotate_half", lambda: _eager_rotary(*args),
        moved, timer,
    )]

    bias = torch.randn((hq + 2 * hkv) * d, device=device, dtype=dtype)
    num_blocks = tokens // BLOCK_SIZE + 1
    caches = [torch.zeros(num_blocks, BLOCK_SIZE, hkv, d, device=device, dtype=dtype) for _ in range(4)]
    slots = torch.randperm(num_blocks * BLOCK_SIZE, device=device)[:tokens].to(torch.int32)
    fused = (q, k, v, positions, cos, sin, caches[0], caches[1], slots, bias)
    outs = kernels.rotary_store_kv(*fused)
    refs = reference.rotary_store_kv(q, k, v, positions, cos, sin, caches[2], caches[3], slots, bias)

    def unfused():  # the launches it replaces, on inputs that already hold the bias
        q_rot, k_rot = kernels.rotary_embedding(*args)
        kernels.store_kv(k_rot, v, caches[2], caches[3], slots)

    # Read q, k, v and write them out, write k and v to the cache: 2 (Hq + 2 Hkv) + 2 Hkv rows of D.
    fused_moved = (2 * (q.numel() + 2 * k.numel()) + 2 * k.numel()) * q.element_size() + table_bytes
    rows.append(_row("rotary_store_kv", label + " +bias", dtype, (*outs, *caches[:2]), (*refs, *caches[2:]),
                     lambda: kernels.rotary_store_kv(*fused), "rotary_embedding + store_kv", unfused,
                     fused_moved, timer))
    return rows


def _activation_rows(device, dtype, shape, timer):
    """silu_and_mul on x [..., 2I] = shape, and both GELUs on the same x."""
    gated = x = torch.randn(shape, device=device, dtype=dtype)
    half = shape[-1] // 2
    out = [_row(
        "silu_and_mul", str(list(shape)), dtype,
        kernels.silu_and_mul(gated), reference.silu_and_mul(gated),
        lambda: kernels.silu_and_mul(gated), "F.silu(gate) * up",
        lambda: F.silu(gated[..., :half]) * gated[..., half:],
        gated.numel() * gated.element_size() * 3 // 2, timer,
    )]
    for approximate in ("none", "tanh"):
        out.append(_row(
            f"gelu[{approximate}]", str(list(shape)), dtype,
            kernels.gelu(x, approximate), reference.gelu(x, approximate),
            lambda a=approximate: kernels.gelu(x, a), "F.gelu",
            lambda a=approximate: F.gelu(x, approximate=a),
            2 * x.numel() * x.element_size(), timer,
        ))
    return out


def check(device, dtype, quick, timer):
    pick = (lambda cases: cases.quick) if quick else (lambda cases: cases.gpu)
    rows = [row for shape in pick(NORM) for row in _norm_rows(device, dtype, shape, timer)]
    rows += [row for shape in pick(ROTARY) for row in _rotary_rows(device, dtype, shape, timer)]
    rows += [row for shape in pick(ACTIVATION) for row in _activation_rows(device, dtype, shape, timer)]
    return rows
