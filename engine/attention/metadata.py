"""The per-step attention metadata the runner gives every attention layer.

One step's tokens are packed flat: sequence b owns rows cu_seqlens_q[b]:cu_seqlens_q[b+1].
Which computation serves a causal step:
  "prefill"        every sequence starts at position 0: attention over the step's own k/v
                   (which are also stored into the cache for later steps);
  "paged_prefill"  some sequence continues a cached prefix (prefix-cache hit, a later chunk
                   of a chunked prefill, or decode rows mixed into the step): attention over
                   the paged cache after the step's k/v are stored;
  "decode"         one new token per sequence: attention over the paged cache.
In a "paged_prefill" step the runner puts the decode sequences first and counts them in
`num_decodes`, so a backend can serve them with the decode kernel and only the longer
queries with the paged-prefill kernel. A bidirectional encoder pass (mask-predict) is "encoder": packed sequences, no cache, every
token sees every token of its own sequence.

The metadata is built once per step; an attention backend may derive per-step tensors from
it (gather indices, masks) on first use and keep them in `plan`, so every layer reuses them.
"""
from dataclasses import dataclass
from typing import Any

import torch

MODES = ("prefill", "paged_prefill", "decode", "encoder")


@dataclass
class Rope:
    """What a rotary layer hands its attention: the step's positions, the fp32 cos/sin tables
    [max_positions, D / 2], and the q/k/v projection's bias (added here, not in the matmul,
    so bias, rotation and the cache store are one kernel on GPUs)."""

    positions: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    bias: torch.Tensor | None = None


@dataclass
class AttentionMetadata:
    mode: str  # one of MODES
    cu_seqlens_q: torch.Tensor  # int32 [B+1]
    slot_mapping: torch.Tensor | None = None  # int [T]; cache slot of each new token, -1 = skip
    context_lens: torch.Tensor | None = None  # int32 [B]; cached + new tokens per sequence
    block_tables: torch.Tensor | None = None  # int32 [B, max_blocks]
    num_decodes: int = 0  # "paged_prefill": the first num_decodes sequences have one query each
    plan: Any = None  # the attention backend's per-step derived tensors

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"attention mode must be one of {MODES}, got {self.mode!r}")
