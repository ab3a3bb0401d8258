"""The model checks the Engine calls at request intake (engine/validation.py)."""
import numpy as np
import pytest
import torch

from engine.params import MaskPredictParams, SamplingParams
from engine.validation import (
    check_params_for_model, check_prompt_ids, check_real, check_seed, check_tokenized_prompt,
)


@pytest.mark.parametrize("ids", [[3, 4], (3, 4), np.array([3, 4]), np.array([3, 4], dtype=np.uint8),
                                 torch.tensor([3, 4]), range(3, 5), [np.int64(3), np.int32(4)]])
def test_prompt_ids_accepted_as_plain_ints(ids):
    out = check_prompt_ids(ids, vocab_size=8)
    assert out == [3, 4] and all(type(t) is int for t in out)


@pytest.mark.parametrize("ids, error, message", [
    ([], ValueError, "prompt is an empty list of token ids"),
    (np.array([], dtype=np.int64), ValueError, "prompt is an empty list of token ids"),
    ([3, 8], ValueError, r"token id 8 is outside the vocabulary \[0, 8\)"),
    ([3, -1], ValueError, "token id -1 is outside the vocabulary"),
    ([3, 2**70], ValueError, "outside the vocabulary"),
    (np.array([3, 9]), ValueError, "token id 9 is outside"),
    ([3, 4.0], TypeError, "prompt token ids must be ints, got float"),
    ([3, True], TypeError, "got bool"),
    (["a", "b"], TypeError, "got str"),
    (np.array([1.5]), TypeError, "got float"),
    (np.array([[1, 2]]), ValueError, r"one-dimensional, got shape \(1, 2\)"),
    (torch.tensor([[1, 2]]), ValueError, "one-dimensional"),
    ({1, 2}, TypeError, "prompt token ids must be a list of ints, got set"),
    (3, TypeError, "must be a list of ints, got int"),
])
def test_bad_prompt_ids(ids, error, message):
    with pytest.raises(error, match=message):
        check_prompt_ids(ids, vocab_size=8)


def test_tokenized_prompt_must_fit_the_model():
    assert check_tokenized_prompt("hi", [1, 2], vocab_size=8) == [1, 2]
    with pytest.raises(ValueError, match=r"tokenizer turns prompt 'hi' into token ids \[8, 50\] outside the "
                                         r"model's vocabulary \[0, 8\): the checkpoint's tokenizer does not match"):
        check_tokenized_prompt("hi", [1, 50, 8], vocab_size=8)
    with pytest.raises(ValueError, match="tokenizes to no tokens"):
        check_tokenized_prompt(" ", [], vocab_size=8)


def test_params_checked_against_the_model():
    check_params_for_model(SamplingParams(stop_token_ids=[7], stop=["x"]), 8, has_tokenizer=True)
    check_params_for_model(MaskPredictParams(top_k=100), 8, has_tokenizer=False)  # top_k above vocab: all
    with pytest.raises(ValueError, match=r"stop_token_ids: token id 8 is outside the model's vocabulary \[0, 8\)"):
        check_params_for_model(SamplingParams(stop_token_ids=[1, 8]), 8, has_tokenizer=True)
    with pytest.raises(ValueError, match="stop strings need the checkpoint's tokenizer"):
        check_params_for_model(SamplingParams(stop="END"), 8, has_tokenizer=False)
    check_params_for_model(SamplingParams(stop_token_ids=[3]), 8, has_tokenizer=False)


def test_min_tokens_must_leave_a_token_to_draw():
    every_other = SamplingParams(min_tokens=2, stop_token_ids=[0, 1, 2, 3, 4, 5, 6])
    check_params_for_model(every_other, 8, has_tokenizer=True, eos_token_ids=[6])
    with pytest.raises(ValueError, match="cover the whole vocabulary of 8 tokens"):
        check_params_for_model(every_other, 8, has_tokenizer=True, eos_token_ids=[7])
    every_other.ignore_eos = True
    check_params_for_model(every_other, 8, has_tokenizer=True, eos_token_ids=[7])
    every_other.min_tokens = 0
    every_other.ignore_eos = False
    check_params_for_model(every_other, 8, has_tokenizer=True, eos_token_ids=[7])


def test_params_changed_after_construction_are_caught():
    """The engine checks each request's request_copy(), which validates what changed."""
    p = SamplingParams()
    p.temperature = -1.0
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        check_params_for_model(p.request_copy(), 8, has_tokenizer=True)
    p = SamplingParams()
    p.stop_token_ids = [99]
    with pytest.raises(ValueError, match="token id 99 is outside"):
        check_params_for_model(p.request_copy(), 8, has_tokenizer=True)
    p = SamplingParams(stop_token_ids=[3])
    p.stop_token_ids.append(99)  # in place: the list is the very one validated, its items are not
    with pytest.raises(ValueError, match="token id 99 is outside"):
        check_params_for_model(p.request_copy(), 8, has_tokenizer=True)


def test_scalar_helpers():
    assert check_real("x", 3) == 3.0 and type(check_real("x", np.float16(0.5))) is float
    assert check_real("x", None, allow_none=True) is None
    assert check_seed("seed", 2**64 + 1) == 1 and check_seed("seed", None, allow_none=True) is None
    with pytest.raises(TypeError, match="seed must be an int, got NoneType"):
        check_seed("seed", None)
