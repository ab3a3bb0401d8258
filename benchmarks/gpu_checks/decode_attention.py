"""decode_attention and store_kv: correctness against kernels.reference, speed against torch.

Caches and block tables are laid out as the engine's CUDA graphs pass them: table rows as wide
as the longest context served, padded past each sequence's blocks (benchmarks.kernel_cases).
decode_attention runs with its default launch parameters, then with num_stages 3, 4 and 5
(rows "decode_attention stages=N"), and is timed against SDPA over a contiguous KV of the same
size (q [B, H, 1, D]), the HBM-bound ceiling a paged kernel should approach; store_kv against
torch's indexed copy into the cache. Bytes are what the kernels must move at least:
decode_attention reads every context row of K and V once plus q and writes out; store_kv
reads k, v and the slots and writes the rows.
"""
import dataclasses
import importlib

import torch
import torch.nn.functional as F
import triton

import kernels
from kernels import reference

from ..kernel_cases import DECODE, STORE_KV, decode_inputs
from . import rel_err, result_row, tolerance

STAGES = (3, 4, 5)
_decode = importlib.import_module("kernels.decode_attention")


def contiguous_kv(cache, block_tables, context_lens):
    """The paged rows of each sequence as one contiguous [B, Hkv, max context, D] tensor."""
    longest = int(context_lens.max())
    used = block_tables[:, : triton.cdiv(longest, cache.shape[1])].long()  # not the table's padding
    return cache[used].flatten(1, 2)[:, :longest].transpose(1, 2).contiguous()


def _decode_rows(case, device, dtype, timer):
    args = decode_inputs(case, dtype, device)
    q, k_cache, v_cache, block_tables, context_lens = args
    scale = case.head_dim ** -0.5
    expected = reference.decode_attention(*args, scale)

    k = contiguous_kv(k_cache, block_tables, context_lens)
    v = contiguous_kv(v_cache, block_tables, context_lens)
    mask = None
    if len(set(case.context_lens)) > 1:  # ragged batch: mask each sequence's padding
        mask = (torch.arange(k.shape[2], device=device)[None, :] < context_lens[:, None])[:, None, None, :]

    def sdpa():
        return F.scaled_dot_product_attention(q.unsqueeze(2), k, v, attn_mask=mask, scale=scale,
                                              enable_gqa=case.num_q_heads != case.num_kv_heads)

    splits = _decode.max_kv_splits(len(case.context_lens), case.num_kv_heads, block_tables.shape[1] * case.block_size,
                                   device)
    default = _decode.default_config(dtype, case.head_dim)
    configs = [("decode_attention", default)]
    configs += [(f"decode_attention stages={s}", dataclasses.replace(default, num_stages=s)) for s in STAGES]
    element = q.element_size()
    rows = []
    for name, config in configs:
        def run(config=config):
            return _decode.launch(*args, scale, config)

        rows.append(result_row(
            name, f"{case.label()} grid-splits={splits}", dtype, rel_err(run(), expected), tolerance(dtype), run,
            "torch SDPA, contiguous KV", sdpa, timer,
            nbytes=2 * int(context_lens.sum()) * case.num_kv_heads * case.head_dim * element + 2 * q.numel() * element,
            flops=4 * int(context_lens.sum()) * case.num_q_heads * case.head_dim,
        ))
    return rows


def _store_row(case, device, dtype, timer):
    tokens, heads, head_dim, block_size, _ = case
    num_slots = max(4 * tokens, 64 * block_size)
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
    decode_cases = DECODE.quick if quick else DECODE.gpu
    store_cases = STORE_KV.quick if quick else STORE_KV.gpu
    rows = [row for case in decode_cases for row in _decode_rows(case, device, dtype, timer)]
    rows += [_store_row(case, device, dtype, timer) for case in store_cases]
    return rows
