"""The attention layer of the causal models and the per-step metadata the runner gives it.

One step's tokens are packed flat: sequence b owns rows cu_seqlens_q[b]:cu_seqlens_q[b+1].
Which kernel serves a step (see kernels/prefill_attention.py):
  "prefill"        every sequence starts at position 0 -> prefill_attention(causal=True) on
                   the step's own k/v (they are also stored into the cache for later steps);
  "paged_prefill"  some sequence continues a cached prefix (prefix-cache hit, a later chunk
                   of a chunked prefill, or decode rows mixed into the step) ->
                   paged_prefill_attention over the cache after store_kv;
  "decode"         one new token per sequence -> decode_attention over the cache.
"""
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AttentionMetadata:
    mode: str  # "prefill" | "paged_prefill" | "decode"
    cu_seqlens_q: torch.Tensor  # int32 [B+1]
    slot_mapping: torch.Tensor | None = None  # int [T]; cache slot of each new token, -1 = skip
    context_lens: torch.Tensor | None = None  # int32 [B]; cached + new tokens per sequence
    block_tables: torch.Tensor | None = None  # int32 [B, max_blocks]


class PagedAttention(nn.Module):
    """Stores the step's k/v into this layer's paged cache, then attends with the right kernel.

    The runner binds `k_cache`/`v_cache` ([num_blocks, block_size, Hkv, D]) after it has
    sized the cache; without a bound cache only the "prefill" mode can run.
    """

    def __init__(self, ops, num_heads, num_kv_heads, head_dim, scale):
        super().__init__()
        self.ops = ops
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = scale
        self.k_cache = self.v_cache = None

    def forward(self, q, k, v, meta: AttentionMetadata):
        """q [T, Hq, D], k/v [T, Hkv, D] -> [T, Hq, D]."""
        ops = self.ops
        if self.k_cache is not None and meta.slot_mapping is not None:
            ops.store_kv(k, v, self.k_cache, self.v_cache, meta.slot_mapping)
        if meta.mode == "prefill":
            return ops.prefill_attention(q, k, v, meta.cu_seqlens_q, self.scale, True)
        if meta.mode == "paged_prefill":
            return ops.paged_prefill_attention(
                q, self.k_cache, self.v_cache, meta.block_tables, meta.cu_seqlens_q,
                meta.context_lens, self.scale,
            )
        if meta.mode == "decode":
            return ops.decode_attention(
                q, self.k_cache, self.v_cache, meta.block_tables, meta.context_lens, self.scale
            )
        raise ValueError(f"unknown attention mode {meta.mode!r}")
