"""BERT / RoBERTa / DistilBERT on the kernels match HF's `*ForMaskedLM` on packed batches."""
import importlib.util

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM

from engine.attention import AttentionMetadata
from engine.models.loader import load_model
from tests.tiny_masked import FAMILIES, make_masked_lm

# the kernel modules the encoder calls through ops
ENCODER_KERNELS = ("prefill_attention", "norms", "activations")


def require_backend(backend, modules=ENCODER_KERNELS):
    """Skip the Triton backend until every kernel module it needs has landed."""
    if backend == "triton":
        missing = [m for m in modules if importlib.util.find_spec(f"kernels.{m}") is None]
        if missing:
            pytest.skip(f"Triton kernel module(s) not written yet: {', '.join('kernels/' + m + '.py' for m in missing)}")


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory):
    return request.param, make_masked_lm(request.param, tmp_path_factory.mktemp(request.param))


def pack(sequences):
    ids = torch.cat([torch.tensor(s) for s in sequences])
    positions = torch.cat([torch.arange(len(s)) for s in sequences])
    cu = torch.tensor([0] + [len(s) for s in sequences], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return ids, positions, cu


def assert_packed_matches_hf(loaded, hf, compare_hidden=True):
    """The engine's masked LM on one packed batch against HF on each sequence alone: different
    lengths, masks inside, words outside the tokenizer's first ids."""
    tok = loaded.tokenizer
    sequences = [
        [tok.cls_token_id, 10, 11, tok.mask_token_id, tok.mask_token_id, 40, tok.sep_token_id],
        [tok.cls_token_id, 70, tok.mask_token_id, tok.sep_token_id],
        [tok.cls_token_id] + list(range(20, 33)) + [tok.mask_token_id, tok.sep_token_id],
    ]
    ids, positions, cu = pack(sequences)
    with torch.no_grad():
        hidden = loaded.model(ids, positions, AttentionMetadata("encoder", cu))
        logits = loaded.model.compute_logits(hidden)
    assert logits.dtype == torch.float32 and logits.shape == (len(ids), loaded.vocab_size)
    for i, seq in enumerate(sequences):
        with torch.no_grad():
            out = hf(torch.tensor([seq]), output_hidden_states=True)
        rows = slice(int(cu[i]), int(cu[i + 1]))
        if compare_hidden:
            torch.testing.assert_close(hidden[rows], out.hidden_states[-1][0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(logits[rows], out.logits[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_packed_batch_matches_hf(checkpoint, backend):
    require_backend(backend)
    family, path = checkpoint
    loaded = load_model(path, dtype="float32", device="cpu", kernel_backend=backend)
    hf = AutoModelForMaskedLM.from_pretrained(path, dtype=torch.float32).eval()
    assert_packed_matches_hf(loaded, hf)


def test_logits_only_for_asked_rows(checkpoint):
    """compute_logits on a subset of rows equals those rows of the full head."""
    _, path = checkpoint
    loaded = load_model(path, dtype="float32", device="cpu", kernel_backend="torch")
    ids, positions, cu = pack([[0, 5, 6, 7, 2, 1], [0, 9, 1]])
    with torch.no_grad():
        hidden = loaded.model(ids, positions, AttentionMetadata("encoder", cu))
        full = loaded.model.compute_logits(hidden)
        some = loaded.model.compute_logits(hidden[[1, 3, 7]])
    torch.testing.assert_close(some, full[[1, 3, 7]])


def test_positions_limit(checkpoint):
    """RoBERTa's padding offset costs pad + 1 embedding rows; the served length excludes them."""
    family, path = checkpoint
    loaded = load_model(path, dtype="float32", device="cpu", kernel_backend="torch")
    offset = loaded.hf_config.pad_token_id + 1 if family == "roberta" else 0
    assert loaded.model.max_positions == loaded.hf_config.max_position_embeddings - offset == 64


def test_unexpected_weight_is_named(checkpoint):
    _, path = checkpoint
    loaded = load_model(path, dtype="float32", device="cpu", kernel_backend="torch")
    weights = load_file(f"{path}/model.safetensors")
    weights["surprise.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="surprise.weight"):
        type(loaded.model)(loaded.hf_config, loaded.model.ops).load_weights(weights)


def test_unknown_activation_is_named(checkpoint):
    family, path = checkpoint
    loaded = load_model(path, dtype="float32", device="cpu", kernel_backend="torch")
    config = loaded.hf_config
    setattr(config, "activation" if family == "distilbert" else "hidden_act", "swish")
    with pytest.raises(ValueError, match="swish"):
        type(loaded.model)(config, loaded.model.ops)
