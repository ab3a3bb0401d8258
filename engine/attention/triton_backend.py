"""Attention on the Triton kernels (the GPU path; on CPU they run in Triton's interpreter).

Each mode maps to one kernel launch per layer after `store_kv`, or after `rotary_store_kv`
for a rotary model (bias, rotation and store in one launch); a mixed step takes two: its
decode rows go to the decode kernel, whose grid fits one query per sequence, instead of
taking a 64-128-row prefill tile each); the kernels read the metadata's tensors directly, so
nothing is derived per step on the host and the decode path stays CUDA-graph safe.
"""
import torch

import kernels


class TritonAttention:
    name = "triton"

    def paged(self, q, k, v, k_cache, v_cache, scale, meta, rope=None):
        """q [T, Hq, D], k/v [T, Hkv, D] of the step's tokens -> [T, Hq, D]; stores k/v first
        (rotated by `rope` when given)."""
        store = k_cache is not None and meta.slot_mapping is not None
        if rope is not None:
            caches = (k_cache, v_cache, meta.slot_mapping) if store else (None, None, None)
            q, k, v = kernels.rotary_store_kv.unchecked(q, k, v, rope.positions, rope.cos, rope.sin, *caches, rope.bias)
        elif store:
            kernels.store_kv.unchecked(k, v, k_cache, v_cache, meta.slot_mapping)
        if meta.mode == "prefill":
            return kernels.prefill_attention.unchecked(q, k, v, meta.cu_seqlens_q, scale, True)
        if meta.mode == "decode":
            return kernels.decode_attention.unchecked(
                q, k_cache, v_cache, meta.block_tables, meta.context_lens, scale)
        d = meta.num_decodes
        if not d:
            return kernels.paged_prefill_attention.unchecked(
                q, k_cache, v_cache, meta.block_tables, meta.cu_seqlens_q, meta.context_lens, scale)
        decoded = kernels.decode_attention.unchecked(
            q[:d], k_cache, v_cache, meta.block_tables[:d], meta.context_lens[:d], scale)
        prefilled = kernels.paged_prefill_attention.unchecked(
            q[d:], k_cache, v_cache, meta.block_tables[d:], meta.cu_seqlens_q[d:] - d, meta.context_lens[d:], scale)
        return torch.cat([decoded, prefilled])

    def encoder(self, q, k, v, scale, meta, rope=None):
        """Bidirectional attention within each packed sequence (q, k rotated by `rope` when given)."""
        if rope is not None:
            q, k, v = kernels.rotary_store_kv.unchecked(q, k, v, rope.positions, rope.cos, rope.sin, None, None, None,
                                                        rope.bias)
        return kernels.prefill_attention.unchecked(q, k, v, meta.cu_seqlens_q, scale, False)
