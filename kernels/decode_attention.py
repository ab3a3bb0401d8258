"""decode_attention: one query token per sequence over its paged KV cache (flash-decoding).

Sequence b attends with q[b] [Hq, D] over its first n_b = context_lens[b] cached rows; row t
lives in block block_tables[b, t // block_size] at offset t % block_size of the caches
[num_blocks, block_size, Hkv, D]. Table entries past a sequence's blocks are never read, so
the engine may pass wide tables padded with any block id (its CUDA graphs pass rows as wide
as the longest context the model serves).

Grouped queries: the Hq / Hkv query heads that share a KV head are one [GROUP, D] block, so a
program reads each K/V tile once and scores the whole group with one `tl.dot` (the group is
padded to 16 rows, the smallest dot tile; padded rows are zero and never stored).

Split-KV: a decode step has only batch * Hkv (sequence, KV head) pairs, too few to fill the
GPU when the batch is small and the context long. The grid is therefore (B, Hkv, S) with S
fixed by the launch shapes alone (batch, Hkv, the table's width), so it is the same at every
replay of a CUDA graph. Each program reads its own sequence's length n and plans the split
on the device: n is cut into s = clamp(ceil(n / MIN_PARTITION), 1, S) partitions of equal
length (rounded up to whole K/V tiles), and programs past the s-th return at once. Each
partition keeps an online softmax in fp32 with base-2 exponents (scores are prescaled by
scale * log2(e)): a running max m, a running sum l = sum 2^(s - m) and an accumulator
acc = sum 2^(s - m) v. The partials of a row are merged by a log-sum-exp reduction:

    M = max_i m_i,   out = sum_i 2^(m_i - M) acc_i / sum_i 2^(m_i - M) l_i

A sequence planned as one partition (short contexts, or S = 1 at large batches) is
normalized and written by its only program. Otherwise the merge runs in the same launch,
in whichever of the sequence's s programs finishes last (one launch per decode step, not
two): each program stores its partials, then counts itself in with an atomic add on a
counter of its (sequence, KV head); the program that reads s - 1 merges and sets the counter
back to 0, so the counters are zero again at the end of every launch (and of every CUDA
graph replay). The ordering is the one a grid-wide barrier uses: all threads' stores, a CTA
barrier, then the counting atomic with release semantics at GPU scope; the merging program's
atomic acquires, and it reads the partials from L2 (".cg"), never from a stale L1 line.
The counters are one int32 per (sequence, KV head), zeroed once and kept per device; they
grow only outside CUDA graph capture (the engine runs each shape once before capturing it),
and two launches that split must not run at once on different streams of one device.
"""
import dataclasses
import math

import torch
import triton
import triton.language as tl

from . import _alloc, _checks, _launch

MIN_PARTITION = 256  # context rows below which a split costs more to merge than it saves
MAX_SPLITS = 64  # partitions per sequence at most (the grid's third dimension)


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """Launch parameters of the partition kernel."""

    block_n: int  # context rows per K/V tile
    num_warps: int
    num_stages: int  # K/V tiles in flight (software pipelining depth)


def default_config(dtype: torch.dtype, head_dim: int) -> DecodeConfig:
    """64-row K/V tiles and four warps; in fp32, whose full-precision dots run on the FMA
    units with their operands in registers, 32-row tiles over eight warps (the compile report
    shows four warps spilling at head_dim 128 on sm_90). Three tiles in flight while a K and
    V tile pair fits in 32 KiB, two beyond."""
    fp32 = dtype == torch.float32
    block_n = 32 if fp32 else 64
    tile_bytes = 2 * block_n * _launch.dot_block(head_dim) * dtype.itemsize  # one K and one V tile
    return DecodeConfig(block_n=block_n, num_warps=8 if fp32 else 4,
                        num_stages=3 if tile_bytes <= 32 * 1024 else 2)


@triton.jit
def _split_plan(context_len, max_splits, MIN_PARTITION: tl.constexpr, BLOCK_N: tl.constexpr):
    """(partitions, rows per partition) of a context of `context_len` rows (see module doc)."""
    wanted = tl.minimum(tl.maximum((context_len + MIN_PARTITION - 1) // MIN_PARTITION, 1), max_splits)
    rows = tl.maximum((context_len + wanted - 1) // wanted, 1)
    rows = (rows + BLOCK_N - 1) // BLOCK_N * BLOCK_N
    return tl.maximum((context_len + rows - 1) // rows, 1), rows


# Batch and model sizes stay runtime values: one compiled kernel serves every batch bucket.
@triton.jit(do_not_specialize=["max_splits", "num_q_heads", "group"])
def _decode_partition_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr,
    out_ptr, m_ptr, l_ptr, acc_ptr, counters_ptr,
    qk_scale, max_splits, num_q_heads, group,
    stride_qb, stride_qh, stride_qd,
    stride_cb, stride_cs, stride_ch, stride_cd,
    stride_tb, stride_tc, stride_ob, stride_oh,
    GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, MIN_PARTITION: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context_len = tl.load(context_lens_ptr + seq).to(tl.int32)
    splits, partition = _split_plan(context_len, max_splits, MIN_PARTITION, BLOCK_N)
    if split >= splits:  # this sequence needs fewer partitions than the grid holds
        return
    start = split * partition
    end = tl.minimum(start + partition, context_len)

    rows = tl.arange(0, GROUP_PAD)
    heads = kv_head * group + rows
    dims = tl.arange(0, D_PAD)
    row_mask = rows < group
    dim_mask = dims < HEAD_DIM
    q = tl.load(
        q_ptr + seq * stride_qb + heads[:, None] * stride_qh + dims[None, :] * stride_qd,
        mask=row_mask[:, None] & dim_mask[None, :], other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, D_PAD], tl.float32)
    table = block_tables_ptr + seq.to(tl.int64) * stride_tb
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
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)

        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        scores = tl.where(valid[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))  # finite: every tile has a valid row
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    out_mask = row_mask[:, None] & dim_mask[None, :]
    out_offset = seq * stride_ob + heads[:, None] * stride_oh + dims[None, :]
    if splits == 1:
        # An empty context (a padding row) has l = 0 and acc = 0: it yields zeros, as the reference.
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(out_ptr + out_offset, out.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        # Partials are contiguous [B, Hq, max_splits] (m, l) and [B, Hq, max_splits, D] (acc).
        first = (seq * num_q_heads + heads) * max_splits  # each head's partition 0
        tl.store(m_ptr + first + split, m_i, mask=row_mask)
        tl.store(l_ptr + first + split, l_i, mask=row_mask)
        tl.store(acc_ptr + (first + split)[:, None] * HEAD_DIM + dims[None, :], acc, mask=out_mask)
        tl.debug_barrier()  # every thread's partials are stored before this program counts itself in
        counter = counters_ptr + seq * tl.num_programs(1) + kv_head
        if tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu") == splits - 1:  # the last one: merge
            tl.store(counter, 0)
            # M per head over its partitions (finite: each holds rows), then the weighted sums.
            m_max = tl.full([GROUP_PAD], float("-inf"), tl.float32)
            for part in range(0, splits):
                m_part = tl.load(m_ptr + first + part, mask=row_mask, other=0.0, cache_modifier=".cg")
                m_max = tl.maximum(m_max, m_part)
            numerator = tl.zeros([GROUP_PAD, D_PAD], tl.float32)
            denominator = tl.zeros([GROUP_PAD], tl.float32)
            for part in range(0, splits):
                m_part = tl.load(m_ptr + first + part, mask=row_mask, other=0.0, cache_modifier=".cg")
                l_part = tl.load(l_ptr + first + part, mask=row_mask, other=0.0, cache_modifier=".cg")
                acc_part = tl.load(acc_ptr + (first + part)[:, None] * HEAD_DIM + dims[None, :],
                                   mask=out_mask, other=0.0, cache_modifier=".cg")
                weight = tl.exp2(m_part - m_max)
                numerator += weight[:, None] * acc_part
                denominator += weight * l_part
            out = numerator / tl.where(row_mask, denominator, 1.0)[:, None]
            tl.store(out_ptr + out_offset, out.to(out_ptr.dtype.element_ty), mask=out_mask)


def max_kv_splits(batch, num_kv_heads, capacity, device):
    """The grid's partitions per sequence S: enough for about two programs per SM when
    batch * Hkv alone cannot fill the GPU, never more than a `capacity`-row context (the
    block table's width) could use, at most MAX_SPLITS."""
    programs = batch * num_kv_heads
    sms = _launch.sm_count(torch.device(device))
    if programs >= sms:
        return 1
    wanted = triton.cdiv(2 * sms, programs)
    useful = triton.cdiv(capacity, MIN_PARTITION)
    return max(1, min(wanted, useful, MAX_SPLITS))


_counters: dict = {}  # device -> int32 zeros: the merge counters (module docstring)


def _merge_counters(size: int, device) -> torch.Tensor:
    """At least `size` zeroed counters on `device`, kept between launches."""
    device = torch.device(device)
    counters = _counters.get(device)
    if counters is None or counters.numel() < size:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"decode_attention needs {size} split counters on {device} but holds "
                f"{0 if counters is None else counters.numel()}; run the step's shape once before "
                "capturing it in a CUDA graph"
            )
        counters = _counters[device] = torch.zeros(max(size, 1024), dtype=torch.int32, device=device)
    return counters


def launch(q, k_cache, v_cache, block_tables, context_lens, scale, config: DecodeConfig):
    """`decode_attention` with explicit launch parameters (the GPU check sweeps them)."""
    if k_cache.stride() != v_cache.stride():
        raise ValueError(
            f"v_cache must have the strides of k_cache {k_cache.stride()}, got {v_cache.stride()}"
        )
    batch, num_q_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    out = _alloc.empty((batch, num_q_heads, head_dim), q.dtype, q.device)
    if batch == 0:
        return out

    splits = max_kv_splits(batch, num_kv_heads, block_tables.shape[1] * block_size, q.device)
    if splits == 1:  # every sequence is one partition: nothing below is written
        m = l = acc = out
        counters = block_tables  # int32, as the counters are, so one signature serves both
    else:
        m = _alloc.empty((batch, num_q_heads, splits), torch.float32, q.device)
        l = _alloc.empty((batch, num_q_heads, splits), torch.float32, q.device)
        acc = _alloc.empty((batch, num_q_heads, splits, head_dim), torch.float32, q.device)
        counters = _merge_counters(batch * num_kv_heads, q.device)
    group = num_q_heads // num_kv_heads
    _decode_partition_kernel[(batch, num_kv_heads, splits)](
        q, k_cache, v_cache, block_tables, context_lens,
        out, m, l, acc, counters,
        scale * math.log2(math.e), splits, num_q_heads, group,
        *q.stride(), *k_cache.stride(),
        *block_tables.stride(), out.stride(0), out.stride(1),
        GROUP_PAD=_launch.dot_block(group), HEAD_DIM=head_dim, D_PAD=_launch.dot_block(head_dim),
        BLOCK_SIZE=block_size, BLOCK_N=config.block_n, MIN_PARTITION=MIN_PARTITION,
        **_launch.dot_settings(q.dtype),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


@_checks.checked(_checks.check_decode_attention)
def decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale):
    """Attention of q [B, Hq, D] over each row's paged context; returns [B, Hq, D] in q's dtype.

    No host sync: the grid depends on shapes only, and each program plans its sequence's
    split from context_lens on the device (module docstring).
    """
    return launch(q, k_cache, v_cache, block_tables, context_lens, scale,
                  default_config(q.dtype, q.shape[-1]))
