"""`model(input_ids, positions, meta, rows)` (the model protocol) equals the full forward's rows.

The executors read logits at a few rows (a prompt's last token, the masked slots of a
mask-predict pass), so every family runs its last layer's post-attention half and the final
norm at those rows only. What it returns there must be what the full forward computes: up
to float rounding, since a matmul over fewer rows may round differently.
"""
import pytest
import torch

from engine import LLM
from engine.attention import AttentionMetadata
from tests.test_eurobert_models import make_eurobert
from tests.tiny_causal import make_gpt2, make_llama, make_qwen2
from tests.tiny_masked import make_masked_lm

MAKERS = {
    "gpt2": (make_gpt2, "prefill"),
    "llama": (make_llama, "prefill"),
    "qwen2": (make_qwen2, "prefill"),
    "bert": (lambda path: make_masked_lm("bert", str(path / "bert")), "encoder"),
    "eurobert": (make_eurobert, "encoder"),
}


@pytest.mark.parametrize("family", list(MAKERS))
@pytest.mark.parametrize("backend", ["torch", "triton"])
@torch.inference_mode()
def test_rows_equal_the_full_forward_rows(family, backend, tmp_path):
    make, mode = MAKERS[family]
    model = LLM(make(tmp_path), kernel_backend=backend, num_kv_blocks=16).engine.loaded.model
    lengths = [5, 3, 7]
    cu = torch.tensor([0, 5, 8, 15], dtype=torch.int32)
    input_ids = torch.randint(5, 100, (sum(lengths),), generator=torch.Generator().manual_seed(0))
    positions = torch.cat([torch.arange(n) for n in lengths])
    rows = torch.tensor([4, 5, 7, 14], dtype=torch.int32)  # last rows and one inside a sequence
    full = model(input_ids, positions, AttentionMetadata(mode, cu))
    picked = model(input_ids, positions, AttentionMetadata(mode, cu), rows)
    assert picked.shape == (len(rows), full.shape[1])
    torch.testing.assert_close(picked, full[rows.long()], rtol=1e-5, atol=1e-5)
