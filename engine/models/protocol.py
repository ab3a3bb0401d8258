"""The contract between the engine and a model family, written as typing Protocols.

A family is one file in engine/models/ whose class takes `(hf_config, ops, tp=SINGLE)` (ops
from engine.backend.get_ops, tp an engine.distributed.parallel.TensorParallel), is
registered in engine/models/__init__.py by its HF `architectures` name, and follows one of
these protocols. The loader builds it on the meta device and then calls `load_weights` with
the checkpoint's tensors, read in the target dtype and device (torch tensors, or lazily
read ones that answer `.shape` and `[index]`); the executors only use what is listed here.

Tensor parallelism: built with `tp`, the class holds rank tp.rank's shard. It builds its
projections, embedding and head from engine.distributed.layers (plain layers at size 1),
its attention layers get this rank's heads, and `num_kv_heads` counts this rank's kv heads
(what its KV cache holds); `vocab_size` stays the whole vocabulary (compute_logits gathers
it). On rank 0 the executors see a TensorParallelModel, which follows the same protocol.
"""
from typing import Protocol, runtime_checkable

import torch

from engine.attention import AttentionMetadata, PagedAttention


@runtime_checkable
class CausalLM(Protocol):
    """Decodes autoregressively over a paged KV cache (engine.autoregressive)."""

    vocab_size: int  # rows of the embedding and the LM head
    num_layers: int  # one PagedAttention per layer; the KV cache has this many layers
    num_kv_heads: int  # key/value heads per layer on this rank (the cache's third dimension)
    head_dim: int

    def attention_layers(self) -> list[PagedAttention]:
        """The layers whose k_cache/v_cache the runner binds, in layer order."""

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """Flat step tokens input_ids/positions [T] -> final hidden states [T, hidden], or
        [R, hidden] at the packed rows `rows` (int [R]) only. The last layer still attends
        from every row (later rows' keys need them) but runs what follows its attention, and
        the final norm, at `rows` only: the executors read logits at a few rows."""

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [N, hidden] of the rows that sample -> logits [N, vocab_size] in the
        model's dtype (consumers cast where they need fp32: no fp32 copy of all logits)."""

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Take the parameters from HF-named checkpoint tensors; ValueError naming any
        missing, unexpected or misshapen tensor."""


@runtime_checkable
class MaskedLM(Protocol):
    """A bidirectional encoder refined by mask-predict (engine.mask_predict)."""

    vocab_size: int
    max_positions: int  # tokens one packed sequence may hold

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """Packed sequences (meta.mode "encoder"; positions restart at 0 in each) -> [T, hidden],
        or [R, hidden] at `rows` only, as CausalLM.forward."""

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The MLM head on the rows asked for, [N, hidden] -> logits [N, vocab_size] (model dtype)."""

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """As CausalLM.load_weights."""


PROTOCOLS = {"causal": CausalLM, "masked": MaskedLM}
