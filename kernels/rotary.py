"""Rotary position embedding of q and k (GPT-NeoX / Llama half-rotation layout).

Each head vector x of length D is split into halves x1 = x[:D/2], x2 = x[D/2:], and the pair
(x1[i], x2[i]) is rotated by the angle of the token's position:
  out1 = x1 * cos - x2 * sin,   out2 = x2 * cos + x1 * sin,
with cos/sin = cos_cache[pos], sin_cache[pos] (fp32 tables, rope scaling already folded in).
One program handles one token: it loads the token's cos/sin row once and rotates every q
head and every k head with it (Hq and Hkv may differ), in fp32, in a single launch.
"""
import triton
import triton.language as tl

from . import _alloc, _checks


@triton.jit
def _rotate_heads(src_ptr, dst_ptr, token, token_stride, head_stride, n_heads, half, cos, sin,
                  BLOCK_HEADS: tl.constexpr, BLOCK_HALF: tl.constexpr):
    """Rotate the [n_heads, 2 * half] block of one token; outputs are contiguous [T, H, D]."""
    heads = tl.arange(0, BLOCK_HEADS)
    cols = tl.arange(0, BLOCK_HALF)
    mask = (heads[:, None] < n_heads) & (cols[None, :] < half)
    src = src_ptr + token * token_stride + heads[:, None] * head_stride + cols[None, :]
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + half, mask=mask, other=0.0).to(tl.float32)
    out1 = x1 * cos[None, :] - x2 * sin[None, :]
    out2 = x2 * cos[None, :] + x1 * sin[None, :]
    dst = dst_ptr + token * n_heads * 2 * half + heads[:, None] * 2 * half + cols[None, :]
    tl.store(dst, out1.to(dst_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + half, out2.to(dst_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rotary_kernel(
    q_ptr, k_ptr, q_out_ptr, k_out_ptr, positions_ptr, cos_ptr, sin_ptr,
    q_token_stride, q_head_stride, k_token_stride, k_head_stride, table_stride,
    n_q_heads, n_k_heads, half,
    BLOCK_Q_HEADS: tl.constexpr, BLOCK_K_HEADS: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    position = tl.load(positions_ptr + token).to(tl.int64)
    cols = tl.arange(0, BLOCK_HALF)
    cos = tl.load(cos_ptr + position * table_stride + cols, mask=cols < half, other=0.0)
    sin = tl.load(sin_ptr + position * table_stride + cols, mask=cols < half, other=0.0)
    _rotate_heads(q_ptr, q_out_ptr, token, q_token_stride, q_head_stride, n_q_heads, half, cos, sin,
                  BLOCK_Q_HEADS, BLOCK_HALF)
    _rotate_heads(k_ptr, k_out_ptr, token, k_token_stride, k_head_stride, n_k_heads, half, cos, sin,
                  BLOCK_K_HEADS, BLOCK_HALF)


def _unit_last_stride(t):
    return t if t.stride(-1) == 1 else t.contiguous()


@_checks.checked(_checks.check_rotary)
def rotary_embedding(q, k, positions, cos_cache, sin_cache):
    """Return (q_rot, k_rot) for q [T, Hq, D], k [T, Hkv, D] at `positions` [T]; inputs are not modified.

    q and k may be strided views (e.g. slices of a fused qkv projection) as long as head_dim
    is contiguous; positions must index rows of cos_cache / sin_cache [P, D/2].
    """
    q_out = _alloc.empty(q.shape, q.dtype, q.device)
    k_out = _alloc.empty(k.shape, k.dtype, k.device)
    n_tokens, half = q.shape[0], q.shape[2] // 2
    if n_tokens == 0:
        return q_out, k_out
    q, k = _unit_last_stride(q), _unit_last_stride(k)
    positions, cos_cache, sin_cache = positions.contiguous(), cos_cache.contiguous(), sin_cache.contiguous()
    block_q, block_k = triton.next_power_of_2(q.shape[1]), triton.next_power_of_2(k.shape[1])
    block_half = triton.next_power_of_2(half)
    num_warps = min(max(block_q * block_half // 512, 1), 8)
    _rotary_kernel[(n_tokens,)](
        q, k, q_out, k_out, positions, cos_cache, sin_cache,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos_cache.stride(0),
        q.shape[1], k.shape[1], half,
        BLOCK_Q_HEADS=block_q, BLOCK_K_HEADS=block_k, BLOCK_HALF=block_half, num_warps=num_warps,
    )
    return q_out, k_out
