"""Prefill attention over packed variable-length batches (FlashAttention-2 style, Triton).

Which kernel serves which case:
  * plain prompt prefill, no cached prefix (every sequence starts at position 0):
    `prefill_attention(..., causal=True)` on the step's own contiguous k/v;
  * encoder passes (BERT-style models, every mask-predict refinement pass):
    `prefill_attention(..., causal=False)`;
  * prefix-cache hit, or a later chunk of a chunked prefill: `paged_prefill_attention` over
    the paged cache, after `store_kv` has written the new tokens' k/v into it (one new token
    per sequence also works, but plain decode steps belong to `kernels.decode_attention`).

The math, for one query row q_i of a sequence and the keys k_j it may see:

    o_i = sum_j softmax_j(scale * q_i . k_j) v_j

computed with the online softmax: keys stream through in tiles of BLOCK_N; each tile updates
the running row maximum m, the running denominator l and the fp32 accumulator acc, rescaling
the old ones by exp(m_old - m_new). Exponentials use exp2 with log2(e) folded into the scale.

One program owns a tile of BLOCK_M query rows of one sequence and one query head; the grid
is (query tiles of all sequences) x (query heads), flattened with the heads fastest so the
heads sharing a tile run side by side. A program finds its sequence on the device from
cu_seqlens (a prefix sum of per-sequence tile counts), so launches need no host sync: the
grid is sized by a bound (T / BLOCK_M + B tiles at most) and surplus programs do nothing.
Programs read only their own sequence's keys. Under the causal mask a program stops at the
diagonal, and key tiles wholly below it skip the mask arithmetic. GQA: query head h reads kv
head h // (Hq / Hkv). head_dim is padded to a power of two with masked loads.

Positions: a sequence's n new queries are its last n tokens of ctx (ctx = n for
`prefill_attention`, context_lens[b] for the paged variant); query i sits at position
ctx - n + i and, when causal, sees keys 0..ctx - n + i.
"""
import torch
import triton
import triton.language as tl

from . import _alloc, _checks, _launch

_LOG2E = 1.4426950408889634


@triton.jit
def _attend_key_range(acc, l_i, m_i, q, k_base, v_base, block_table_ptr, kv_start, lo, hi,
                      ctx, q_pos, offs_d, d_mask, qk_scale, stride_k_page, stride_k_slot,
                      stride_v_page, stride_v_slot, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                      PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
                      UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """Fold keys lo..hi (multiples of BLOCK_N) into the online-softmax state of one query tile.

    MASKED tiles may cross the causal diagonal or the sequence end; the others are known to
    be visible to every row, so they skip the mask.
    """
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        if PAGED:
            # Positions past ctx would read past the block table's row: send them to block 0,
            # their k/v loads are masked anyway.
            pages = tl.load(block_table_ptr + offs_n // PAGE_SIZE, mask=offs_n < ctx, other=0)
            pages = pages.to(tl.int64)
            k_rows = pages * stride_k_page + (offs_n % PAGE_SIZE) * stride_k_slot
            v_rows = pages * stride_v_page + (offs_n % PAGE_SIZE) * stride_v_slot
        else:
            rows = (kv_start + offs_n).to(tl.int64)
            k_rows = rows * stride_k_page
            v_rows = rows * stride_v_page
        kv_mask = d_mask[None, :]
        if MASKED:
            kv_mask = kv_mask & (offs_n < ctx)[:, None]
        k = tl.load(k_base + k_rows[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + v_rows[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        if MASKED:
            visible = (offs_n < ctx)[None, :]
            if CAUSAL:
                visible = visible & (offs_n[None, :] <= q_pos[:, None])
            s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _owning_sequence(cu_seqlens_q, num_seqs, tile, BLOCK_M: tl.constexpr, SEQ_BLOCK: tl.constexpr):
    """(sequence, its first tile) of query tile `tile`, sequence b owning ceil(n_b / BLOCK_M)
    consecutive tiles: the sequences whose tiles all end at or before `tile` come before it.
    Reads cu_seqlens SEQ_BLOCK entries at a time, so the batch size is not a constexpr."""
    seq = tl.zeros([], tl.int32)
    first_tile = tl.zeros([], tl.int32)
    tiles_before = tl.zeros([], tl.int32)
    for start in range(0, num_seqs, SEQ_BLOCK):
        offs = start + tl.arange(0, SEQ_BLOCK)
        in_batch = offs < num_seqs
        lens = (tl.load(cu_seqlens_q + offs + 1, mask=in_batch, other=0)
                - tl.load(cu_seqlens_q + offs, mask=in_batch, other=0))
        tiles = tl.where(in_batch, (lens + BLOCK_M - 1) // BLOCK_M, 0)
        before = in_batch & (tiles_before + tl.cumsum(tiles, 0) <= tile)
        seq += tl.sum(before.to(tl.int32), 0)
        first_tile += tl.sum(tl.where(before, tiles, 0), 0)
        tiles_before += tl.sum(tiles, 0)
    return seq, first_tile


@triton.jit(do_not_specialize=["num_seqs", "num_q_heads", "group_size"])  # one kernel for every batch
def _prefill_attention_kernel(
    Q, K, V, O, cu_seqlens_q, context_lens, block_tables,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_k_page, stride_k_slot, stride_k_head, stride_v_page, stride_v_slot, stride_v_head,
    stride_bt,
    num_seqs, num_q_heads, group_size, qk_scale,
    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PAGED: tl.constexpr,
    PAGE_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, SEQ_BLOCK: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    head = pid % num_q_heads
    tile = pid // num_q_heads

    seq, first_tile = _owning_sequence(cu_seqlens_q, num_seqs, tile, BLOCK_M, SEQ_BLOCK)
    if seq >= num_seqs:  # a surplus program of the grid's bound
        return
    q_start = tl.load(cu_seqlens_q + seq)
    n_q = tl.load(cu_seqlens_q + seq + 1) - q_start
    # Last tiles first: under the causal mask they see the most keys, so they start earliest.
    m_start = ((n_q + BLOCK_M - 1) // BLOCK_M - 1 - (tile - first_tile)) * BLOCK_M

    if PAGED:
        ctx = tl.load(context_lens + seq)
        kv_start = 0
        block_table_ptr = block_tables + seq.to(tl.int64) * stride_bt
    else:
        ctx = n_q
        kv_start = q_start
        block_table_ptr = block_tables
    kv_head = head // group_size
    k_base = K + kv_head * stride_k_head
    v_base = V + kv_head * stride_v_head

    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    row_mask = offs_m < n_q
    q_rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(Q + q_rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=row_mask[:, None] & d_mask[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    q_pos = ctx - n_q + offs_m  # the queries' positions in their sequence

    if CAUSAL:
        hi = tl.minimum(ctx - n_q + m_start + BLOCK_M, ctx)
        # Keys up to the tile's first query position are visible to every row of it.
        full_end = (ctx - n_q + m_start + 1) // BLOCK_N * BLOCK_N
    else:
        hi = ctx
        full_end = ctx // BLOCK_N * BLOCK_N
    full_end = tl.minimum(full_end, hi)

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    acc, l_i, m_i = _attend_key_range(
        acc, l_i, m_i, q, k_base, v_base, block_table_ptr, kv_start, 0, full_end, ctx, q_pos,
        offs_d, d_mask, qk_scale, stride_k_page, stride_k_slot, stride_v_page, stride_v_slot,
        False, CAUSAL, PAGED, PAGE_SIZE, BLOCK_N, UPCAST, PRECISION)
    acc, l_i, m_i = _attend_key_range(
        acc, l_i, m_i, q, k_base, v_base, block_table_ptr, kv_start, full_end, hi, ctx, q_pos,
        offs_d, d_mask, qk_scale, stride_k_page, stride_k_slot, stride_v_page, stride_v_slot,
        True, CAUSAL, PAGED, PAGE_SIZE, BLOCK_N, UPCAST, PRECISION)

    out = acc / l_i[:, None]
    tl.store(O + q_rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=row_mask[:, None] & d_mask[None, :])


def tile_config(dtype, head_dim, num_tokens, num_seqs):
    """Tile sizes and launch shape for num_tokens queries of head_dim in num_seqs sequences.

    On the GPU, 16-bit inputs: 128-row query tiles (two warpgroups on Hopper) against 64-key
    tiles over eight warps, three K/V tiles in flight; 64-row tiles when sequences are short
    on average, so tiles are not mostly padding (eight warps beyond head_dim 64, where four
    spill). fp32 inputs take full-precision dots, which run on the FMA units with their
    operands in registers: 32x16 tiles over eight warps, the largest the compile report
    shows free of spills on sm_80 and sm_90.
    SEQ_BLOCK: cu_seqlens entries a program reads at a time to find its sequence.
    In the interpreter: small tiles, so short test sequences still span several tiles, and a
    small SEQ_BLOCK, so the tests' batches take several reads.
    """
    block_d = _launch.dot_block(head_dim)
    if _launch.INTERPRETED:
        return dict(BLOCK_M=32, BLOCK_N=16, BLOCK_D=block_d, SEQ_BLOCK=4, num_warps=4, num_stages=1)
    if dtype == torch.float32:
        return dict(BLOCK_M=32, BLOCK_N=16, BLOCK_D=block_d, SEQ_BLOCK=64, num_warps=8, num_stages=2)
    if num_tokens <= 64 * num_seqs:
        return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_D=block_d, SEQ_BLOCK=64,
                    num_warps=8 if block_d > 64 else 4, num_stages=3)
    return dict(BLOCK_M=128, BLOCK_N=64, BLOCK_D=block_d, SEQ_BLOCK=64, num_warps=8, num_stages=3)


def _run(q, k, v, cu_seqlens_q, scale, causal, paged):
    """Run the kernel on contiguous k/v [T, Hkv, D] (paged None) or on a paged cache
    (paged = (block_tables, context_lens), k/v [num_blocks, block_size, Hkv, D])."""
    out = _alloc.empty_like(q)
    num_tokens, num_q_heads, head_dim = q.shape
    num_seqs = cu_seqlens_q.shape[0] - 1
    if num_tokens == 0:
        return out
    q, k, v = (_launch.unit_stride(t) for t in (q, k, v))
    cfg = tile_config(q.dtype, head_dim, num_tokens, num_seqs)
    block_m = cfg["BLOCK_M"]
    # Each sequence of length L has ceil(L / BLOCK_M) tiles, at most one of them partial.
    max_tiles = min(num_tokens, (num_tokens + num_seqs * (block_m - 1)) // block_m)
    if paged is None:
        block_tables = context_lens = cu_seqlens_q  # unused when PAGED is False
        page_size, stride_bt = 1, 0
        # [T, Hkv, D] read as pages of one row: (page, slot, head) strides.
        k_strides = (k.stride(0), 0, k.stride(1))
        v_strides = (v.stride(0), 0, v.stride(1))
    else:
        block_tables, context_lens = paged
        page_size, stride_bt = k.shape[1], block_tables.stride(0)
        k_strides, v_strides = k.stride()[:3], v.stride()[:3]
    num_kv_heads = k.shape[-2]
    _prefill_attention_kernel[(max_tiles * num_q_heads,)](
        q, k, v, out, cu_seqlens_q, context_lens, block_tables,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        *k_strides, *v_strides, stride_bt,
        num_seqs, num_q_heads, num_q_heads // num_kv_heads, float(scale) * _LOG2E,
        HEAD_DIM=head_dim, CAUSAL=causal, PAGED=paged is not None, PAGE_SIZE=page_size,
        **_launch.dot_settings(q.dtype), **cfg,
    )
    return out


@_checks.checked(_checks.check_prefill_attention)
def prefill_attention(q, k, v, cu_seqlens, scale, causal):
    """Packed variable-length attention: sequence i owns rows cu_seqlens[i]:cu_seqlens[i+1].

    q [T, Hq, D], k/v [T, Hkv, D], cu_seqlens int32 [B+1]; no attention across sequences;
    causal=False is the bidirectional encoder case. Returns [T, Hq, D] in q's dtype.
    """
    return _run(q, k, v, cu_seqlens, scale, causal, None)


@_checks.checked(_checks.check_paged_prefill_attention)
def paged_prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale):
    """Causal attention of each sequence's new tokens over its paged cache.

    Sequence b's queries q[cu_seqlens_q[b]:cu_seqlens_q[b+1]] are its last n_b tokens; its
    cache (k_cache/v_cache [num_blocks, block_size, Hkv, D], rows listed by block_tables[b])
    already holds context_lens[b] rows: the cached prefix plus the new tokens.
    """
    return _run(q, k_cache, v_cache, cu_seqlens_q, scale, True, (block_tables, context_lens))
