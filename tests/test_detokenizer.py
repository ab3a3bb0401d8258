"""Incremental detokenization gives the same text as decoding all generated ids at once."""
import random
from types import SimpleNamespace

import pytest

from engine.detokenizer import IncrementalDetokenizer
from tests.tokenizer_factory import CAUSAL_SPECIALS, make_tokenizer


def _request():
    return SimpleNamespace(output_token_ids=[], text="", detok_prefix_offset=0, detok_read_offset=0)


@pytest.mark.parametrize("clean_up", [False, True])
def test_incremental_text_equals_full_decode(clean_up):
    tok = make_tokenizer(CAUSAL_SPECIALS, 120)
    tok.clean_up_tokenization_spaces = clean_up
    detok = IncrementalDetokenizer(tok)
    rng = random.Random(0)
    requests = [_request() for _ in range(8)]
    # words, punctuation that clean-up joins, and special tokens that decode to nothing
    for _ in range(25):
        for req in requests:
            req.output_token_ids.append(rng.randrange(len(tok)))
        detok.update(requests)
    for req in requests:
        assert req.text == tok.decode(req.output_token_ids, skip_special_tokens=True)
