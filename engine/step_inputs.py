"""What one autoregressive step gives the model, and what it computes from it."""
from dataclasses import dataclass

import torch

from engine.attention import AttentionMetadata


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # int32 [T]
    positions: torch.Tensor  # int32 [T]
    meta: AttentionMetadata
    sample_rows: torch.Tensor  # int32 [N]: the packed rows whose logits are needed


def forward_logits(model, inputs: StepInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, the LM head at the sampling rows, the greedy argmax:
    (logits [N, V] in the model's dtype, argmax [N])."""
    # A decode step samples at every row (its graph keeps the plain path); a prefill only at
    # the last row of each prompt, so its last layer's MLP runs there only.
    rows = None if inputs.meta.mode == "decode" else inputs.sample_rows
    hidden = model(inputs.input_ids, inputs.positions, inputs.meta, rows)
    if rows is None:
        hidden = hidden.index_select(0, inputs.sample_rows)
    logits = model.compute_logits(hidden)
    return logits, logits.argmax(dim=-1)
