"""Rotary position embedding (GPT-NeoX / Llama half-rotation layout), alone or fused with the
qkv bias and the paged-cache store.

Each head vector x of length D is split into halves x1 = x[:D/2], x2 = x[D/2:], and the pair
(x1[i], x2[i]) is rotated by the angle of the token's position:
  out1 = x1 * cos - x2 * sin,   out2 = x2 * cos + x1 * sin,
with cos/sin = cos_cache[pos], sin_cache[pos] (fp32 tables, rope scaling already folded in).

`rotary_store_kv` is the attention side of a Llama-family layer in one launch: for the
q [T, Hq, D], k and v [T, Hkv, D] of a fused qkv projection computed without its bias,
  h = x + bias (rounded to x's dtype, as a biased projection would produce it),
  q_out = rope(h_q), k_out = rope(h_k), v_out = h_v,
and k_out / v_out rows go to their paged-cache slots (slot -1: not stored), as `store_kv`
writes them. Without a bias the add is skipped; without caches nothing is stored.

One program handles one token: it loads the token's cos/sin row once and rotates every q
head and every k head with it (Hq and Hkv may differ), in fp32, in a single launch.
"""
import triton
import triton.language as tl

from . import _alloc, _checks, _launch


@triton.jit
def _heads(src_ptr, src_head_stride, dst_ptr, dst_head_stride, bias_ptr, n_heads, half, cos, sin,
           cache_ptr, cache_head_stride, slot,
           HAS_BIAS: tl.constexpr, ROTATE: tl.constexpr, STORE: tl.constexpr,
           BLOCK_HEADS: tl.constexpr, BLOCK_HALF: tl.constexpr):
    """One token's [n_heads, 2 * half] block: + bias, rotated (ROTATE), written to dst and,
    when STORE and the token's slot is not -1, to the cache row at cache_ptr."""
    heads = tl.arange(0, BLOCK_HEADS)
    cols = tl.arange(0, BLOCK_HALF)
    mask = (heads[:, None] < n_heads) & (cols[None, :] < half)
    src = src_ptr + heads[:, None] * src_head_stride + cols[None, :]
    x1 = tl.load(src, mask=mask, other=0.0)
    x2 = tl.load(src + half, mask=mask, other=0.0)
    if HAS_BIAS:
        bias = bias_ptr + heads[:, None] * 2 * half + cols[None, :]
        x1 = (x1.to(tl.float32) + tl.load(bias, mask=mask, other=0.0).to(tl.float32)).to(x1.dtype)
        x2 = (x2.to(tl.float32) + tl.load(bias + half, mask=mask, other=0.0).to(tl.float32)).to(x2.dtype)
    if ROTATE:
        a, b = x1.to(tl.float32), x2.to(tl.float32)
        x1 = (a * cos[None, :] - b * sin[None, :]).to(dst_ptr.dtype.element_ty)
        x2 = (b * cos[None, :] + a * sin[None, :]).to(dst_ptr.dtype.element_ty)
    dst = dst_ptr + heads[:, None] * dst_head_stride + cols[None, :]
    tl.store(dst, x1, mask=mask)
    tl.store(dst + half, x2, mask=mask)
    if STORE:
        row = cache_ptr + heads[:, None] * cache_head_stride + cols[None, :]
        keep = tl.where(slot >= 0, mask, False)
        tl.store(row, x1, mask=keep)
        tl.store(row + half, x2, mask=keep)


@triton.jit
def _rotary_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, positions_ptr, cos_ptr, sin_ptr,
    q_out_ptr, k_out_ptr, v_out_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_qot, stride_qoh, stride_kot, stride_koh, stride_vot, stride_voh,
    stride_table, stride_cb, stride_cs, stride_ch,
    n_q_heads, n_kv_heads, half,
    HAS_V: tl.constexpr, HAS_BIAS: tl.constexpr, STORE: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_Q_HEADS: tl.constexpr, BLOCK_KV_HEADS: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    position = tl.load(positions_ptr + token).to(tl.int64)
    cols = tl.arange(0, BLOCK_HALF)
    cos = tl.load(cos_ptr + position * stride_table + cols, mask=cols < half, other=0.0)
    sin = tl.load(sin_ptr + position * stride_table + cols, mask=cols < half, other=0.0)
    cache_row = 0
    slot = -1
    if STORE:
        slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
        cache_row = (slot // BLOCK_SIZE) * stride_cb + (slot % BLOCK_SIZE) * stride_cs
    q_size = n_q_heads * 2 * half
    kv_size = n_kv_heads * 2 * half
    _heads(q_ptr + token * stride_qt, stride_qh, q_out_ptr + token * stride_qot, stride_qoh,
           bias_ptr, n_q_heads, half, cos, sin, k_cache_ptr, stride_ch, slot,
           HAS_BIAS, True, False, BLOCK_Q_HEADS, BLOCK_HALF)
    _heads(k_ptr + token * stride_kt, stride_kh, k_out_ptr + token * stride_kot, stride_koh,
           bias_ptr + q_size, n_kv_heads, half, cos, sin, k_cache_ptr + cache_row, stride_ch, slot,
           HAS_BIAS, True, STORE, BLOCK_KV_HEADS, BLOCK_HALF)
    if HAS_V:
        _heads(v_ptr + token * stride_vt, stride_vh, v_out_ptr + token * stride_vot, stride_voh,
               bias_ptr + q_size + kv_size, n_kv_heads, half, cos, sin, v_cache_ptr + cache_row, stride_ch,
               slot, HAS_BIAS, False, STORE, BLOCK_KV_HEADS, BLOCK_HALF)


def _launch_rotary(q, k, v, bias, positions, cos_cache, sin_cache, outs, caches, slot_mapping):
    """The one launcher of both functions; v / bias / caches may be None, outs is (q, k[, v]) out."""
    n_tokens, n_q_heads, head_dim = q.shape
    n_kv_heads = k.shape[1]
    if n_tokens == 0:
        return
    q, k = _launch.unit_stride(q), _launch.unit_stride(k)
    v = k if v is None else _launch.unit_stride(v)
    q_out, k_out, v_out = (*outs, outs[1]) if len(outs) == 2 else outs
    positions, cos_cache, sin_cache = positions.contiguous(), cos_cache.contiguous(), sin_cache.contiguous()
    if caches is not None:
        if caches[0].stride() != caches[1].stride() or caches[0].stride(-1) != 1:
            raise ValueError("k_cache and v_cache must share their strides, with head_dim contiguous; got "
                             f"{caches[0].stride()} and {caches[1].stride()}")
        slot_mapping = slot_mapping.contiguous()
    k_cache, v_cache = caches if caches is not None else (k_out, v_out)
    cache_strides = k_cache.stride()[:3] if caches is not None else (0, 0, 0)
    block_q, block_kv = triton.next_power_of_2(n_q_heads), triton.next_power_of_2(n_kv_heads)
    block_half = triton.next_power_of_2(head_dim // 2)
    _rotary_kernel[(n_tokens,)](
        q, k, v, q if bias is None else bias, positions, cos_cache, sin_cache,
        q_out, k_out, v_out, k_cache, v_cache, positions if slot_mapping is None else slot_mapping,
        *q.stride()[:2], *k.stride()[:2], *v.stride()[:2],
        *q_out.stride()[:2], *k_out.stride()[:2], *v_out.stride()[:2],
        cos_cache.stride(0), *cache_strides,
        n_q_heads, n_kv_heads, head_dim // 2,
        HAS_V=len(outs) == 3, HAS_BIAS=bias is not None, STORE=caches is not None,
        BLOCK_SIZE=k_cache.shape[1] if caches is not None else 1,
        BLOCK_Q_HEADS=block_q, BLOCK_KV_HEADS=block_kv, BLOCK_HALF=block_half,
        num_warps=min(max(block_q * block_half // 512, 1), 8),
    )


@_checks.checked(_checks.check_rotary)
def rotary_embedding(q, k, positions, cos_cache, sin_cache):
    """Return (q_rot, k_rot) for q [T, Hq, D], k [T, Hkv, D] at `positions` [T]; inputs are not modified.

    q and k may be strided views (e.g. slices of a fused qkv projection) as long as head_dim
    is contiguous; positions must index rows of cos_cache / sin_cache [P, D/2].
    """
    q_out = _alloc.empty(q.shape, q.dtype, q.device)
    k_out = _alloc.empty(k.shape, k.dtype, k.device)
    _launch_rotary(q, k, None, None, positions, cos_cache, sin_cache, (q_out, k_out), None, None)
    return q_out, k_out


@_checks.checked(_checks.check_rotary_store_kv)
def rotary_store_kv(q, k, v, positions, cos_cache, sin_cache, k_cache, v_cache, slot_mapping, bias=None):
    """(q_out [T, Hq, D], k_out [T, Hkv, D], v_out [T, Hkv, D]) of the module docstring, and
    k_out / v_out written into k_cache / v_cache [num_blocks, block_size, Hkv, D] at
    slot_mapping [T] (-1 skips a token).

    q, k, v: the unbiased projection's heads, possibly strided views of one [T, (Hq + 2 Hkv) D]
    tensor; bias: None or the projection's bias [(Hq + 2 Hkv) D] (q, then k, then v).
    k_cache, v_cache and slot_mapping are all None when no cache is bound (nothing stored).
    The three outputs are views of one [T, Hq + 2 Hkv, D] buffer.
    """
    n_tokens, n_q_heads, head_dim = q.shape
    n_kv_heads = k.shape[1]
    out = _alloc.empty((n_tokens, n_q_heads + 2 * n_kv_heads, head_dim), q.dtype, q.device)
    outs = out.split([n_q_heads, n_kv_heads, n_kv_heads], dim=1)
    caches = None if k_cache is None else (k_cache, v_cache)
    _launch_rotary(q, k, v, bias, positions, cos_cache, sin_cache, outs, caches, slot_mapping)
    return outs
