"""EuroBERT (the bidirectional Llama block) on the kernels matches HF's `EuroBertForMaskedLM`,
and mask-predict on it matches the plain HF loop (the experiment's bidirectional models save
in this format)."""
import pytest
import torch
from transformers import EuroBertConfig, EuroBertForMaskedLM

from engine import LLM, MaskPredictParams
from engine.models.loader import load_model
from tests.hf_mask_predict import hf_mask_predict
from tests.test_bert_models import assert_packed_matches_hf, require_backend
from tests.tokenizer_factory import BERT_SPECIALS, make_tokenizer

VOCAB = 96


def make_eurobert(path, tied=True, seed=0):
    """A tiny random EuroBERT (large init range: peaked, decisive predictions) and its tokenizer."""
    torch.manual_seed(seed)
    tokenizer = make_tokenizer(BERT_SPECIALS, vocab_size=VOCAB)
    config = EuroBertConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                            initializer_range=0.3, tie_word_embeddings=tied, mlp_bias=not tied,
                            pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id,
                            bos_token_id=None, eos_token_id=None)
    EuroBertForMaskedLM(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied-with-biases"])
def checkpoint(request, tmp_path_factory):
    return make_eurobert(tmp_path_factory.mktemp("eurobert"), tied=request.param)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_packed_batch_matches_hf(checkpoint, backend):
    require_backend(backend, ("prefill_attention", "norms", "activations", "rotary"))
    loaded = load_model(checkpoint, dtype="float32", device="cpu", kernel_backend=backend)
    assert loaded.kind == "masked"
    hf = EuroBertForMaskedLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    assert_packed_matches_hf(loaded, hf, compare_hidden=False)  # HF's last hidden state precedes its norm


def test_mask_predict_matches_the_hf_loop(checkpoint):
    llm = LLM(checkpoint, device="cpu")
    hf = EuroBertForMaskedLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    prompt = [10, 11, 12]
    for params in (MaskPredictParams(length=8, iterations=4), MaskPredictParams(length=6, iterations=6, block_length=1),
                   MaskPredictParams(length=8, iterations=3, temperature=1.0, seed=7)):
        got = llm.generate([prompt], params)[0]
        want, _ = hf_mask_predict(hf, llm.tokenizer, prompt, params)
        assert got.token_ids == want.token_ids
