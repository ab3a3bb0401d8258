"""decode_attention and store_kv: correctness against kernels.reference, speed against torch.

decode_attention is timed against SDPA over a contiguous KV of the same size (q [B, H, 1, D]),
the HBM-bound ceiling a paged kernel should approach; store_kv against torch's indexed copy
into the cache. Bytes are what the kernels must move at least: decode_attention reads every
context row of K and V once plus q and writes out; store_kv reads k, v and the slots and
writes the rows.
"""
import importlib

import torch
import torch.nn.functional as F

import kernels
from kernels import reference

from . import rel_err, result_row, tolerance

# (batch, context, Hq, Hkv, head_dim, block_size)
GPU_CASES = [
    (64, 4096, 32, 32, 128, 16),  # the SDPA measurement in NOTES.md (MHA)
    (64, 4096, 32, 8, 128, 16),  # GQA
    (1, 32768, 32, 8, 128, 16),  # one long context: needs split-KV to fill the GPU
]
QUICK_CASES = [
    (2, 40, 4, 2, 32, 16),
    (1, 600, 4, 1, 32, 32),  # long enough for several splits with the CPU heuristic
]
# (tokens, heads, head_dim, cache slots)
GPU_STORE_CASES = [(16384, 8, 128, 65536)]
QUICK_STORE_CASES = [(24, 2, 32, 64)]


def paged_kv(batch, context, num_q_heads, num_kv_heads, head_dim, block_size, dtype, device):
    """q and a paged cache holding `context` rows per sequence in randomly permuted blocks."""
    blocks_per_seq = -(-context // block_size)
    num_blocks = batch * blocks_per_seq
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.randn(shape, dtype=dtype, device=device)
    v_cache = torch.randn(shape, dtype=dtype, device=device)
    block_tables = torch.randperm(num_blocks, device=device).to(torch.int32).view(batch, blocks_per_seq)
    context_lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    q = torch.randn(batch, num_q_heads, head_dim, dtype=dtype, device=device)
    return q, k_cache, v_cache, block_tables, context_lens


def contiguous_kv(cache, block_tables, context):
    """The paged rows of each sequence as one contiguous [B, Hkv, context, D] tensor."""
    rows = cache[block_tables.long()].flatten(1, 2)[:, :context]
    return rows.transpose(1, 2).contiguous()


def _decode_row(case, device, dtype, timer):
    batch, context, hq, hkv, head_dim, block_size = case
    q, k_cache, v_cache, block_tables, context_lens = paged_kv(*case, dtype, device)
    scale = head_dim ** -0.5
    args = (q, k_cache, v_cache, block_tables, context_lens, scale)
    out = kernels.decode_attention(*args)
    err = rel_err(out, reference.decode_attention(*args))

    k, v = contiguous_kv(k_cache, block_tables, context), contiguous_kv(v_cache, block_tables, context)
    q4 = q.unsqueeze(2)

    def sdpa():
        return F.scaled_dot_product_attention(q4, k, v, scale=scale, enable_gqa=hq != hkv)

    splits = importlib.import_module("kernels.decode_attention").num_kv_splits(
        batch, hkv, block_tables.shape[1] * block_size, device
    )
    element = q.element_size()
    return result_row(
        "decode_attention",
        f"B={batch} ctx={context} Hq={hq} Hkv={hkv} D={head_dim} bs={block_size} splits={splits}",
        dtype, err, tolerance(dtype), lambda: kernels.decode_attention(*args),
        "torch SDPA, contiguous KV", sdpa, timer,
        nbytes=2 * batch * context * hkv * head_dim * element + 2 * q.numel() * element,
        flops=4 * batch * context * hq * head_dim,
    )


def _store_row(case, device, dtype, timer):
    tokens, heads, head_dim, num_slots = case
    block_size = 16
    k = torch.randn(tokens, heads, head_dim, dtype=dtype, device=device)
    v = torch.randn(tokens, heads, head_dim, dtype=dtype, device=device)
    cache_shape = (num_slots // block_size, block_size, heads, head_dim)
    k_cache = torch.zeros(cache_shape, dtype=dtype, device=device)
    v_cache = torch.zeros(cache_shape, dtype=dtype, device=device)
    slots = torch.randperm(num_slots, device=device)[:tokens].to(torch.int32)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    kernels.store_kv(k, v, k_cache, v_cache, slots)
    reference.store_kv(k, v, k_ref, v_ref, slots)
    err = max(rel_err(k_cache, k_ref), rel_err(v_cache, v_ref))

    flat_k, flat_v, index = k_cache.view(-1, heads, head_dim), v_cache.view(-1, heads, head_dim), slots.long()

    def indexed_copy():
        flat_k[index] = k
        flat_v[index] = v

    return result_row(
        "store_kv", f"T={tokens} H={heads} D={head_dim} slots={num_slots}", dtype, err, tolerance(dtype),
        lambda: kernels.store_kv(k, v, k_cache, v_cache, slots), "torch indexed copy", indexed_copy, timer,
        nbytes=4 * k.numel() * k.element_size() + slots.numel() * slots.element_size(),
    )


def check(device, dtype, quick, timer):
    decode_cases = QUICK_CASES if quick else GPU_CASES
    store_cases = QUICK_STORE_CASES if quick else GPU_STORE_CASES
    rows = [_decode_row(case, device, dtype, timer) for case in decode_cases]
    rows += [_store_row(case, device, dtype, timer) for case in store_cases]
    return rows
