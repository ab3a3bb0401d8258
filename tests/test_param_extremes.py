"""The documented edges of the parameter ranges run end to end, and both sampler backends
treat them the same way: the smallest sampled temperature, the float32-maximum temperature,
a top_p below float32's smallest normal, top_k at the int64 limit, seeds past 2^63."""
import numpy as np
import pytest
import torch

import kernels
from engine import LLM, MaskPredictParams, SamplingParams
from engine.params import MIN_TEMPERATURE
from engine.validation import FP32_MAX, INT64_MAX
from kernels import reference
from tests.tiny_causal import make_gpt2
from tests.tiny_masked import make_masked_lm

EDGES = [  # (temperature, top_k, top_p) as the params store them
    (MIN_TEMPERATURE, 0, 1.0),
    (FP32_MAX, 0, 1.0),
    (FP32_MAX, 3, 1.0),
    (1.0, 0, SamplingParams(top_p=1e-300).top_p),
    (1.0, INT64_MAX, 0.5),
    (FP32_MAX, 2**62, SamplingParams(top_p=1e-300).top_p),
]


@pytest.mark.parametrize("temperature, top_k, top_p", EDGES)
def test_both_backends_agree_at_the_edges(temperature, top_k, top_p):
    batch, vocab = 4, 64
    logits = torch.randn(batch, vocab) * 3
    logits[:, :6] = float("-inf")  # banned tokens (min_tokens) must stay banned
    row = lambda value, dtype: torch.full((batch,), value, dtype=dtype)  # noqa: E731
    args = (logits, row(temperature, torch.float32), row(top_k, torch.int64), row(top_p, torch.float32),
            torch.tensor([0, 2**62, 2**63 - 1, -(2**63)], dtype=torch.int64))
    drawn = reference.sample(*args)
    torch.testing.assert_close(kernels.sample(*args), drawn, atol=0, rtol=0)
    assert (drawn >= 6).all()
    if top_p < 1e-30 and temperature == 1.0:  # the nucleus is the most probable token
        assert drawn.tolist() == logits.argmax(-1).tolist()


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return LLM(make_gpt2(tmp_path_factory.mktemp("ckpt")), num_kv_blocks=32)


def _tokens(llm, **params):
    params = {"max_tokens": 6, "ignore_eos": True, **params}
    return llm.generate([[5, 6, 7]], SamplingParams(**params))[0].token_ids


def test_edges_through_the_engine(llm):
    greedy = _tokens(llm, temperature=0.0)
    assert _tokens(llm, temperature=1e-9) == greedy
    assert _tokens(llm, temperature=1.0, top_p=1e-300, seed=3) == greedy
    assert _tokens(llm, temperature=1.0, top_k=INT64_MAX, seed=3) == _tokens(llm, temperature=1.0, seed=3)
    assert _tokens(llm, temperature=1.0, seed=-1) == _tokens(llm, temperature=1.0, seed=2**64 - 1)
    assert _tokens(llm, temperature=1.0, seed=2**64 + 9) == _tokens(llm, temperature=1.0, seed=9)
    banned = list(range(0, 128, 2))
    hot = _tokens(llm, temperature=FP32_MAX, min_tokens=6, stop_token_ids=np.array(banned), seed=1, ignore_eos=False)
    assert not set(hot) & set(banned) and not set(hot) & set(llm.engine.loaded.eos_token_ids)


def test_mask_predict_edges(tmp_path):
    mlm = LLM(make_masked_lm("bert", str(tmp_path / "bert")))
    prompt = "the cat"
    greedy = mlm.generate(prompt, MaskPredictParams(length=4, iterations=2))[0].token_ids
    assert mlm.generate(prompt, MaskPredictParams(length=4, iterations=2, temperature=1e-12))[0].token_ids == greedy
    sampled = [mlm.generate(prompt, MaskPredictParams(length=4, iterations=2, temperature=FP32_MAX, seed=s))[0]
               for s in (2**63 + 1, 2**63 + 1 - 2**64)]
    assert sampled[0].token_ids == sampled[1].token_ids and sampled[0].finished
