"""decode_attention: one query token per sequence over its paged KV cache (flash-decoding).

Sequence b attends with q[b] [Hq, D] over its first n_b = context_lens[b] cached rows; row t
lives in block block_tables[b, t // block_size] at offset t % block_size of the caches
[num_blocks, block_size, Hkv, D].

Grouped queries: the Hq / Hkv query heads that share a KV head are one [GROUP, D] block, so a
program reads each K/V tile once and scores the whole group with one `tl.dot` (the group is
padded to 16 rows, the smallest dot tile; padded rows are zero and never stored).

Split-KV: a decode step has only batch * Hkv (sequence, KV head) pairs, too few to fill the
GPU when the batch is small and the context long. The context is therefore cut into
partitions of `partition_size` rows, one program each. Each keeps an online softmax in
fp32 with base-2 exponents (scores are prescaled by scale * log2(e)): a running max m, a
running sum l = sum 2^(s - m) and an accumulator acc = sum 2^(s - m) v. A second kernel
merges the partials of a row with a log-sum-exp reduction:

    M = max_i m_i,   out = sum_i 2^(m_i - M) acc_i / sum_i 2^(m_i - M) l_i

With a single partition (large batches) the first kernel normalizes and writes the output
itself, so no partials touch memory.
"""
import functools
import math
import os

import torch
import triton
import triton.language as tl

from . import _alloc, _checks

BLOCK_N = 64  # context rows per K/V tile
MIN_PARTITION = 4 * BLOCK_N  # a split below this many rows costs more to merge than it saves
MAX_SPLITS = 64  # bounds the merge kernel's [splits, D] tile
CPU_SM_COUNT = 16  # a stand-in on CPU, so the interpreter runs the same split logic
MIN_DOT = 16  # the smallest tile side tl.dot accepts


@triton.jit
def _decode_partition_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr,
    out_ptr, m_ptr, l_ptr, acc_ptr,
    qk_scale, partition_size, num_splits,
    stride_qb, stride_qh, stride_qd,
    stride_cb, stride_cs, stride_ch, stride_cd,
    stride_tb, stride_tc, stride_ob, stride_oh,
    NUM_Q_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
    SINGLE_SPLIT: tl.constexpr, DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context_len = tl.load(context_lens_ptr + seq)
    start = split * partition_size
    end = tl.minimum(start + partition_size, context_len)

    rows = tl.arange(0, GROUP_PAD)
    heads = kv_head * GROUP + rows
    dims = tl.arange(0, D_PAD)
    row_mask = rows < GROUP
    dim_mask = dims < HEAD_DIM
    q = tl.load(
        q_ptr + seq * stride_qb + heads[:, None] * stride_qh + dims[None, :] * stride_qd,
        mask=row_mask[:, None] & dim_mask[None, :], other=0.0,
    )
    if DOT_FP32:
        q = q.to(tl.float32)

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, D_PAD], tl.float32)
    table = block_tables_ptr + seq * stride_tb
    head_offset = kv_head * stride_ch + dims[None, :] * stride_cd
    for tile_start in range(start, end, BLOCK_N):
        pos = tile_start + tl.arange(0, BLOCK_N)
        valid = pos < end
        block = tl.load(table + (pos // BLOCK_SIZE) * stride_tc, mask=valid, other=0).to(tl.int64)
        rows_offset = block * stride_cb + (pos % BLOCK_SIZE) * stride_cs
        kv_offset = rows_offset[:, None] + head_offset
        kv_mask = valid[:, None] & dim_mask[None, :]
        k = tl.load(k_cache_ptr + kv_offset, mask=kv_mask, other=0.0)
        v = tl.load(v_cache_ptr + kv_offset, mask=kv_mask, other=0.0)
        if DOT_FP32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)

        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        scores = tl.where(valid[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))  # finite: every tile has a valid row
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    out_mask = row_mask[:, None] & dim_mask[None, :]
    if SINGLE_SPLIT:
        # An empty context (a padding row) has l = 0 and acc = 0: it yields zeros, as the reference.
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        out_offset = seq * stride_ob + heads[:, None] * stride_oh + dims[None, :]
        tl.store(out_ptr + out_offset, out.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        # Partials are contiguous [B, Hq, splits] (m, l) and [B, Hq, splits, D] (acc).
        row = (seq * NUM_Q_HEADS + heads) * num_splits + split
        tl.store(m_ptr + row, m_i, mask=row_mask)
        tl.store(l_ptr + row, l_i, mask=row_mask)
        tl.store(acc_ptr + row[:, None] * HEAD_DIM + dims[None, :], acc, mask=out_mask)


@triton.jit
def _merge_partitions_kernel(
    out_ptr, m_ptr, l_ptr, acc_ptr, num_splits,
    stride_ob, stride_oh,
    NUM_Q_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    SPLITS_PAD: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    splits = tl.arange(0, SPLITS_PAD)
    dims = tl.arange(0, D_PAD)
    split_mask = splits < num_splits
    row = (seq * NUM_Q_HEADS + head) * num_splits + splits
    # Empty partitions (past a short row's end) hold m = -inf, l = 0 and weigh nothing.
    m = tl.load(m_ptr + row, mask=split_mask, other=float("-inf"))
    l = tl.load(l_ptr + row, mask=split_mask, other=0.0)
    acc = tl.load(
        acc_ptr + row[:, None] * HEAD_DIM + dims[None, :],
        mask=split_mask[:, None] & (dims[None, :] < HEAD_DIM), other=0.0,
    )
    m_max = tl.max(m, axis=0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)  # an empty context: all weights 0
    weight = tl.exp2(m - m_max)
    total = tl.sum(weight * l, axis=0)
    out = tl.sum(weight[:, None] * acc, axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(
        out_ptr + seq * stride_ob + head * stride_oh + dims,
        out.to(out_ptr.dtype.element_ty), mask=dims < HEAD_DIM,
    )


@functools.lru_cache(maxsize=None)
def _sm_count(device):
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return CPU_SM_COUNT


def num_kv_splits(batch, num_kv_heads, max_context, device):
    """How many partitions to cut each context into so the step fills the GPU.

    Aim for about two programs per SM: one split once batch * Hkv reaches the SM count,
    more for small batches, but never partitions shorter than MIN_PARTITION rows.
    """
    programs = batch * num_kv_heads
    sms = _sm_count(torch.device(device))
    if programs >= sms:
        return 1
    wanted = triton.cdiv(2 * sms, programs)
    useful = triton.cdiv(max_context, MIN_PARTITION)
    return max(1, min(wanted, useful, MAX_SPLITS))


@_checks.checked(_checks.check_decode_attention)
def decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale):
    """Attention of q [B, Hq, D] over each row's paged context; returns [B, Hq, D] in q's dtype.

    The number of splits is sized from block_tables' width (the longest context the batch
    can hold), which avoids reading context_lens back to the host.
    """
    if k_cache.stride() != v_cache.stride():
        raise ValueError(
            f"v_cache must have the strides of k_cache {k_cache.stride()}, got {v_cache.stride()}"
        )
    batch, num_q_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    out = _alloc.empty((batch, num_q_heads, head_dim), q.dtype, q.device)
    if batch == 0:
        return out

    group = num_q_heads // num_kv_heads
    max_context = block_tables.shape[1] * block_size
    splits = num_kv_splits(batch, num_kv_heads, max_context, q.device)
    partition_size = max(1, triton.cdiv(max_context, splits * BLOCK_N)) * BLOCK_N
    splits = max(1, triton.cdiv(max_context, partition_size))
    single = splits == 1
    if single:
        m = l = acc = out  # unused by the single-split variant
    else:
        m = _alloc.empty((batch, num_q_heads, splits), torch.float32, q.device)
        l = _alloc.empty((batch, num_q_heads, splits), torch.float32, q.device)
        acc = _alloc.empty((batch, num_q_heads, splits, head_dim), torch.float32, q.device)

    d_pad = max(MIN_DOT, triton.next_power_of_2(head_dim))
    # The interpreter's bf16 dot is wrong, so there the operands go through fp32; fp32
    # inputs keep full precision (no tf32) on the GPU; 16-bit inputs use tensor cores.
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    tile_bytes = 2 * BLOCK_N * d_pad * q.element_size()
    _decode_partition_kernel[(batch, num_kv_heads, splits)](
        q, k_cache, v_cache, block_tables, context_lens,
        out, m, l, acc,
        scale * math.log2(math.e), partition_size, splits,
        *q.stride(), *k_cache.stride(), *block_tables.stride(), *out.stride()[:2],
        NUM_Q_HEADS=num_q_heads, GROUP=group,
        GROUP_PAD=max(MIN_DOT, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim, D_PAD=d_pad, BLOCK_SIZE=block_size, BLOCK_N=BLOCK_N,
        SINGLE_SPLIT=single,
        DOT_FP32=interpreted and q.dtype == torch.bfloat16,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=4, num_stages=3 if tile_bytes <= 32 * 1024 else 2,
    )
    if not single:
        _merge_partitions_kernel[(batch, num_q_heads)](
            out, m, l, acc, splits, *out.stride()[:2],
            NUM_Q_HEADS=num_q_heads, HEAD_DIM=head_dim, D_PAD=d_pad,
            SPLITS_PAD=triton.next_power_of_2(splits),
            num_warps=4,
        )
    return out
