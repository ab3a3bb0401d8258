"""prefill_attention and paged_prefill_attention: correctness against kernels.reference,
speed against torch SDPA.

The baseline is `F.scaled_dot_product_attention` on a padded [B, H, L, D] batch with the KV
heads repeated to the query heads beforehand (MHA: SDPA's flash path takes it), is_causal
for AR prompts and a lower-right causal bias for the paged case; padding, gathering and
repetition happen outside the timing, so the baseline gets its best case. Bytes are what the
kernels must move at least: read q, k, v once (for the paged case: every context row of the
cache) and write the output. Flops are the two matmuls, 4 * D * Hq per (query, visible key)
pair: sum(len^2) pairs bidirectional, about half of that causal.
"""
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

import kernels
from kernels import reference

from . import rel_err, result_row, tolerance

# (sequence lengths, Hq, Hkv, head_dim, causal): 8k tokens; encoders are MHA, AR models GQA.
GPU_CASES = [
    ([1024] * 8, 32, 32, 128, False),
    ([4096] * 2, 32, 32, 128, False),
    ([1024] * 8, 32, 8, 128, True),
    ([4096] * 2, 32, 8, 128, True),
]
QUICK_CASES = [([5, 40, 1], 4, 2, 64, False), ([5, 40, 1], 4, 2, 64, True)]
# (cached prefix lengths, new token counts, Hq, Hkv, head_dim, block_size); every sequence
# of a case has the same shape, so the baseline is one SDPA call.
GPU_PAGED_CASES = [([2048] * 4, [512] * 4, 32, 8, 128, 16)]
QUICK_PAGED_CASES = [([20, 20], [9, 9], 4, 2, 64, 16)]


def cu_seqlens(lens, device):
    return torch.tensor([0] + list(lens), device=device).cumsum(0).to(torch.int32)


def packed_inputs(lens, num_q_heads, num_kv_heads, head_dim, dtype, device):
    """Random packed q [T, Hq, D], k/v [T, Hkv, D] and cu_seqlens for sequences of `lens`."""
    total = sum(lens)
    q = torch.randn(total, num_q_heads, head_dim, dtype=dtype, device=device)
    k = torch.randn(total, num_kv_heads, head_dim, dtype=dtype, device=device)
    v = torch.randn(total, num_kv_heads, head_dim, dtype=dtype, device=device)
    return q, k, v, cu_seqlens(lens, device)


def paged_inputs(prefix_lens, new_lens, num_q_heads, num_kv_heads, head_dim, block_size, dtype,
                 device):
    """New-token queries and a cache holding prefix + new rows per sequence in shuffled blocks."""
    context = [p + n for p, n in zip(prefix_lens, new_lens)]
    blocks_per_seq = max(-(-c // block_size) for c in context)
    num_blocks = len(context) * blocks_per_seq
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.randn(shape, dtype=dtype, device=device)
    v_cache = torch.randn(shape, dtype=dtype, device=device)
    block_tables = torch.randperm(num_blocks, device=device).to(torch.int32)
    block_tables = block_tables.view(len(context), blocks_per_seq)
    q = torch.randn(sum(new_lens), num_q_heads, head_dim, dtype=dtype, device=device)
    context_lens = torch.tensor(context, dtype=torch.int32, device=device)
    return q, k_cache, v_cache, block_tables, cu_seqlens(new_lens, device), context_lens


def _padded(x, lens, num_heads):
    """Packed [T, H', D] -> [B, num_heads, max_len, D], heads repeated up to num_heads."""
    batch = x.new_zeros(len(lens), max(lens), x.shape[1], x.shape[2])
    for b, rows in enumerate(x.split(lens)):
        batch[b, : len(rows)] = rows
    return batch.repeat_interleave(num_heads // x.shape[1], dim=2).transpose(1, 2).contiguous()


def sdpa_prefill(q, k, v, lens, scale, causal):
    """A closure running SDPA over the padded batch (a key-padding mask when lengths differ)."""
    hq = q.shape[1]
    qb, kb, vb = _padded(q, lens, hq), _padded(k, lens, hq), _padded(v, lens, hq)
    mask = None
    if len(set(lens)) > 1:
        positions = torch.arange(max(lens), device=q.device)
        valid = positions[None, :] < torch.tensor(lens, device=q.device)[:, None]
        mask = valid[:, None, None, :]
        if causal:
            mask = mask & (positions[None, :] <= positions[:, None])
    is_causal = causal and mask is None
    return lambda: F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, is_causal=is_causal,
                                                  scale=scale)


def _row(kernel, shape, dtype, out, ref, run, baseline, bytes_moved, flops, timer):
    return result_row(kernel, shape, dtype, rel_err(out, ref), tolerance(dtype), run,
                      "torch SDPA, padded batch, KV heads repeated", baseline, timer, bytes_moved, flops)


def _prefill_row(case, device, dtype, timer):
    lens, hq, hkv, head_dim, causal = case
    q, k, v, cu = packed_inputs(lens, hq, hkv, head_dim, dtype, device)
    scale = head_dim**-0.5
    args = (q, k, v, cu, scale, causal)
    out = kernels.prefill_attention(*args)
    ref = reference.prefill_attention(*args)
    pairs = sum(n * (n + 1) // 2 if causal else n * n for n in lens)
    shape = f"{len(lens)}x{max(lens)} Hq={hq} Hkv={hkv} D={head_dim} causal={causal}"
    bytes_moved = (2 * q.numel() + k.numel() + v.numel()) * q.element_size()
    return _row("prefill_attention", shape, dtype, out, ref,
                lambda: kernels.prefill_attention(*args),
                sdpa_prefill(q, k, v, lens, scale, causal), bytes_moved,
                4 * pairs * hq * head_dim, timer)


def _paged_row(case, device, dtype, timer):
    prefix_lens, new_lens, hq, hkv, head_dim, block_size = case
    q, k_cache, v_cache, block_tables, cu, context_lens = paged_inputs(*case, dtype, device)
    scale = head_dim**-0.5
    args = (q, k_cache, v_cache, block_tables, cu, context_lens, scale)
    out = kernels.paged_prefill_attention(*args)
    ref = reference.paged_prefill_attention(*args)

    # Baseline: each sequence's rows gathered into a contiguous [B, Hq, ctx, D] (the cases
    # give every sequence the same shape), queries aligned to the end of the keys.
    batch, ctx, n_new = len(new_lens), prefix_lens[0] + new_lens[0], new_lens[0]

    def gathered(cache):
        rows = cache[block_tables.long()].flatten(1, 2)[:, :ctx]
        return rows.repeat_interleave(hq // hkv, dim=2).transpose(1, 2).contiguous()

    qb = q.view(batch, n_new, hq, head_dim).transpose(1, 2).contiguous()
    kb, vb, bias = gathered(k_cache), gathered(v_cache), causal_lower_right(n_new, ctx)

    def baseline():
        return F.scaled_dot_product_attention(qb, kb, vb, attn_mask=bias, scale=scale)

    pairs = sum(n * p + n * (n + 1) // 2 for p, n in zip(prefix_lens, new_lens))
    element = q.element_size()
    bytes_moved = (2 * q.numel() + 2 * batch * ctx * hkv * head_dim) * element \
        + block_tables.numel() * block_tables.element_size()
    shape = (f"{len(new_lens)}x({max(prefix_lens)} cached + {max(new_lens)} new) Hq={hq} "
             f"Hkv={hkv} D={head_dim} bs={block_size}")
    return _row("paged_prefill_attention", shape, dtype, out, ref,
                lambda: kernels.paged_prefill_attention(*args), baseline, bytes_moved,
                4 * pairs * hq * head_dim, timer)


def check(device, dtype, quick, timer):
    rows = [_prefill_row(c, device, dtype, timer) for c in (QUICK_CASES if quick else GPU_CASES)]
    paged_cases = QUICK_PAGED_CASES if quick else GPU_PAGED_CASES
    rows += [_paged_row(c, device, dtype, timer) for c in paged_cases]
    return rows
