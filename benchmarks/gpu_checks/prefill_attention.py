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

from ..kernel_cases import PAGED_PREFILL, PREFILL, PagedPrefillCase, PrefillCase, packed_inputs, paged_prefill_inputs
from . import rel_err, result_row, tolerance


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


def _prefill_row(case: PrefillCase, causal, device, dtype, timer):
    lens, hq, hkv, head_dim = list(case.lens), case.num_q_heads, case.num_kv_heads, case.head_dim
    q, k, v, cu = packed_inputs(lens, hq, hkv, head_dim, dtype, device)
    scale = head_dim**-0.5
    args = (q, k, v, cu, scale, causal)
    out = kernels.prefill_attention(*args)
    ref = reference.prefill_attention(*args)
    pairs = sum(n * (n + 1) // 2 if causal else n * n for n in lens)
    bytes_moved = (2 * q.numel() + k.numel() + v.numel()) * q.element_size()
    return _row("prefill_attention", f"{case.label()} causal={causal}", dtype, out, ref,
                lambda: kernels.prefill_attention(*args),
                sdpa_prefill(q, k, v, lens, scale, causal), bytes_moved,
                4 * pairs * hq * head_dim, timer)


def _paged_row(case: PagedPrefillCase, device, dtype, timer):
    prefix_lens, new_lens = list(case.prefix_lens), list(case.new_lens)
    hq, hkv, head_dim = case.num_q_heads, case.num_kv_heads, case.head_dim
    q, k_cache, v_cache, block_tables, cu, context_lens = paged_prefill_inputs(case, dtype, device)
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
    return _row("paged_prefill_attention", case.label(), dtype, out, ref,
                lambda: kernels.paged_prefill_attention(*args), baseline, bytes_moved,
                4 * pairs * hq * head_dim, timer)


def check(device, dtype, quick, timer):
    prefill_cases = PREFILL.quick if quick else PREFILL.gpu
    rows = [_prefill_row(c, causal, device, dtype, timer) for c in prefill_cases for causal in (False, True)]
    paged_cases = PAGED_PREFILL.quick if quick else PAGED_PREFILL.gpu
    # The baseline is one SDPA call: only cases whose sequences all have the same shape.
    uniform = [c for c in paged_cases if len(set(c.prefix_lens)) == len(set(c.new_lens)) == 1]
    rows += [_paged_row(c, device, dtype, timer) for c in uniform]
    return rows
