"""Incremental detokenization gives the same text as decoding all generated ids at once,
whether it advances every step or only when a text is read."""
import random

import pytest

from engine.detokenizer import IncrementalDetokenizer
from engine.params import SamplingParams
from engine.request import Request
from tests.tokenizer_factory import CAUSAL_SPECIALS, make_tokenizer


def _request(prompt_len=3):
    return Request("r", None, list(range(prompt_len)), SamplingParams(), seed=0, arrival_time=0.0)


def _tokenizer(clean_up):
    tok = make_tokenizer(CAUSAL_SPECIALS, 120)
    tok.clean_up_tokenization_spaces = clean_up
    return tok


@pytest.mark.parametrize("clean_up", [False, True])
def test_incremental_text_equals_full_decode(clean_up):
    tok = _tokenizer(clean_up)
    detok = IncrementalDetokenizer(tok)
    rng = random.Random(0)
    requests = [_request(prompt_len=i) for i in range(1, 9)]
    # words, punctuation that clean-up joins, and special tokens that decode to nothing
    for _ in range(25):
        for req in requests:
            req.append_token(rng.randrange(len(tok)), None, 0.0)
        detok.advance(requests)
    for req in requests:
        assert req.text == tok.decode(req.output_token_ids, skip_special_tokens=True)


@pytest.mark.parametrize("clean_up", [False, True])
def test_lazy_reads_at_any_point_equal_full_decode(clean_up):
    """text_at(n) after reads at random, sparse points (the engine's lazy text), and an old
    point read after later ones, all equal decoding the first n tokens."""
    tok = _tokenizer(clean_up)
    detok = IncrementalDetokenizer(tok)
    rng = random.Random(1)
    req = _request()
    for n in range(1, 60):
        req.append_token(rng.randrange(len(tok)), None, 0.0)
        if rng.random() < 0.3:
            assert detok.text_at(req, n) == tok.decode(req.output_token_ids[:n], skip_special_tokens=True)
    old = 7
    assert detok.text_at(req, old) == tok.decode(req.output_token_ids[:old], skip_special_tokens=True)


def test_decode_texts_resolves_a_steps_outputs_in_one_call(tmp_path):
    """decode_texts gives every lazy output the text reading it alone would give."""
    from engine import Engine, SamplingParams
    from engine.detokenizer import decode_texts
    from tests.tiny_causal import make_gpt2

    engine = Engine(make_gpt2(str(tmp_path / "gpt2")), num_kv_blocks=32, block_size=4)
    for prompt in ("the cat", "a dog sees", "the bird"):
        engine.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True))
    tok = engine.tokenizer
    while engine.has_unfinished():
        outputs = engine.step()
        decode_texts(outputs)
        for out in outputs:  # caught up: reading the text decodes nothing more
            lazy = out._detokenize
            assert lazy.request.detok_read_offset == lazy.num_generated == len(out.token_ids)
            assert out.text == tok.decode(out.token_ids, skip_special_tokens=True)
