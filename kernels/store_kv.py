"""store_kv: scatter one step's k/v rows into the paged KV cache.

Token i of k/v [N, Hkv, D] goes to cache slot s = slot_mapping[i], i.e. block s // block_size,
offset s % block_size of a cache [num_blocks, block_size, Hkv, D]; a negative slot (-1: a
padding token, or a token whose kv is already cached) is skipped, so that slot is never
written. One program copies one token's [Hkv, D] tile for both k and v.
"""
import triton
import triton.language as tl

from . import _checks


@triton.jit(do_not_specialize=["num_heads"])  # one compiled kernel per padded head count
def _store_kv_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
    stride_kt, stride_kh, stride_kd,
    stride_vt, stride_vh, stride_vd,
    stride_cb, stride_cs, stride_ch, stride_cd, num_heads,
    HEAD_DIM: tl.constexpr, H_PAD: tl.constexpr, D_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot < 0:  # a skipped token: its slot must stay untouched
        return
    heads = tl.arange(0, H_PAD)
    dims = tl.arange(0, D_PAD)
    mask = (heads[:, None] < num_heads) & (dims[None, :] < HEAD_DIM)

    k = tl.load(k_ptr + token * stride_kt + heads[:, None] * stride_kh + dims[None, :] * stride_kd, mask=mask)
    v = tl.load(v_ptr + token * stride_vt + heads[:, None] * stride_vh + dims[None, :] * stride_vd, mask=mask)
    # Both caches share one shape and are allocated alike, so one set of strides serves both.
    dst = (slot // BLOCK_SIZE) * stride_cb + (slot % BLOCK_SIZE) * stride_cs
    dst += heads[:, None] * stride_ch + dims[None, :] * stride_cd
    tl.store(k_cache_ptr + dst, k, mask=mask)
    tl.store(v_cache_ptr + dst, v, mask=mask)


@_checks.checked(_checks.check_store_kv)
def store_kv(k, v, k_cache, v_cache, slot_mapping):
    """Write k/v rows [N, Hkv, D] into their cache slots in place; slot -1 is skipped."""
    if k_cache.stride() != v_cache.stride():
        raise ValueError(
            f"v_cache must have the strides of k_cache {k_cache.stride()}, got {v_cache.stride()}"
        )
    num_tokens, num_heads, head_dim = k.shape
    if num_tokens == 0:
        return
    _store_kv_kernel[(num_tokens,)](
        k, v, k_cache, v_cache, slot_mapping,
        *k.stride(), *v.stride(), *k_cache.stride(), num_heads,
        HEAD_DIM=head_dim,
        H_PAD=triton.next_power_of_2(num_heads), D_PAD=triton.next_power_of_2(head_dim),
        BLOCK_SIZE=k_cache.shape[1],
    )
