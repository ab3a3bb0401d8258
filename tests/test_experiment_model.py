"""The experiment's one transformer (benchmarks/transformer.py): the same block for both masks,
saved as standard HF checkpoints that HF, the engine and the sweep read back identically."""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from benchmarks.transformer import SIZES, Transformer, load_checkpoint, save_checkpoint

SPECIALS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "mask_token_id": 3}


def _random(causal, vocab=50):
    model = Transformer(SIZES["tiny"], vocab, causal).eval()
    for p in model.parameters():  # peaked, and exactly representable in the fp16 checkpoint
        p.data = p.data.normal_(0, 0.3).half().float()
    return model


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_checkpoint_is_a_standard_hf_model(causal, tmp_path):
    model = _random(causal)
    save_checkpoint(model, tmp_path, SPECIALS)
    hf_cls = AutoModelForCausalLM if causal else AutoModelForMaskedLM
    hf = hf_cls.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(hf).__name__ == ("LlamaForCausalLM" if causal else "EuroBertForMaskedLM")
    ids = torch.randint(4, 50, (3, 17))
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[1, 12:] = False
    with torch.no_grad():
        ours, theirs = model(ids, valid), hf(input_ids=ids, attention_mask=valid.long()).logits
        torch.testing.assert_close(ours[valid], theirs[valid], atol=1e-4, rtol=1e-4)
        again, config = load_checkpoint(tmp_path)
        assert torch.equal(again(ids, valid), ours) and again.causal == causal


def test_the_two_masks_share_every_parameter():
    causal, bidirectional = Transformer(SIZES["tiny"], 50, True), Transformer(SIZES["tiny"], 50, False)
    assert [(n, p.shape) for n, p in causal.named_parameters()] == \
        [(n, p.shape) for n, p in bidirectional.named_parameters()]
    bidirectional.load_state_dict(causal.state_dict())
    ids = torch.randint(4, 50, (1, 9))
    with torch.no_grad():
        assert torch.equal(causal(ids[:, :1]), bidirectional(ids[:, :1]))  # one token: no mask to differ
        assert not torch.allclose(causal(ids)[0, 0], bidirectional(ids)[0, 0], atol=1e-3)  # the future counts


@pytest.mark.parametrize("causal", [True, False])
def test_packed_rows_equal_separate_sequences(causal):
    model = _random(causal)
    seqs = [torch.randint(4, 50, (n,)) for n in (5, 9, 3)]
    ids = torch.cat(seqs)[None]
    segments = torch.cat([torch.full((len(s),), i + 1) for i, s in enumerate(seqs)])[None]
    positions = torch.cat([torch.arange(len(s)) for s in seqs])[None]
    with torch.no_grad():
        packed = model.hidden_states(ids, segments=segments, positions=positions)[0]
        alone = torch.cat([model.hidden_states(s[None])[0] for s in seqs])
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


def test_too_long_input_is_refused():
    model = Transformer(SIZES["tiny"], 50, True)
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, SIZES["tiny"].context + 1, dtype=torch.long))
