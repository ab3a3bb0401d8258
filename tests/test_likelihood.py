"""The experiment's likelihood machinery against brute force on the tiny grammar.

With a model whose predictions are the grammar's exact conditionals (tests/grammar_oracle.py),
every "model minus floor" gap must be exactly zero: the left-to-right any-order NLL equals the
exact conditional floor, the length head equals its floor, the single-mask loss equals the
brute-force Bayes optimum, and the masked-diffusion weighting of the training objective
averages, over every mask of every size, to the exact NLL.
"""
import itertools
import math

import numpy as np
import pytest
import torch

from benchmarks import likelihood
from benchmarks.corpus import sample_ids
from benchmarks.frame import answer_slots
from benchmarks.language import ReferenceLanguage
from benchmarks.objectives import MODELS, SpecialIds, framed_batch, valid_cuts
from benchmarks.tokenizer import build_tokenizer
from tests.grammar_oracle import GrammarOracle

CONTEXT = 64


@pytest.fixture(scope="module")
def tiny():
    lang = ReferenceLanguage.tiny()
    ids = SpecialIds.of(len(build_tokenizer("plain", lang.words)))
    sentences = [s for s in sample_ids(lang, 40, seed=3) if len(s) >= 4]
    pairs = [(s[:k], s[k:]) for s, k in zip(sentences, itertools.cycle([2, 3]))][:10]
    oracle = GrammarOracle(lang, ids, [p for p, _ in pairs], CONTEXT)
    return lang, ids, pairs, oracle


def test_left_to_right_nll_of_the_exact_model_is_the_floor(tiny):
    lang, ids, pairs, oracle = tiny
    model_nll = likelihood.left_to_right_nll(oracle, pairs, ids)
    floor = likelihood.conditional_floor(lang, MODELS["cmlm-bert"], pairs, CONTEXT)
    np.testing.assert_allclose(model_nll, floor, rtol=1e-6, atol=1e-5)
    assert (floor > -1e-9).all() and floor.max() > 1


def test_length_head_of_the_exact_model_is_its_floor(tiny):
    lang, ids, pairs, oracle = tiny
    np.testing.assert_allclose(likelihood.length_head_nll(oracle, pairs, ids),
                               likelihood.length_floor(lang, pairs, CONTEXT), rtol=1e-6, atol=1e-5)
    # together they make the likelihood of the answer given the prompt alone
    total = likelihood.left_to_right_nll(oracle, pairs, ids) + likelihood.length_head_nll(oracle, pairs, ids)
    unconditional = likelihood.conditional_floor(lang, MODELS["cmlm-gpt2"], pairs, CONTEXT)
    np.testing.assert_allclose(total, unconditional, rtol=1e-6, atol=1e-5)


def test_single_mask_bayes_optimum_matches_brute_force(tiny):
    lang, ids, pairs, oracle = tiny
    model, bayes = likelihood.single_mask_loss(oracle, lang, pairs, ids, CONTEXT, seed=1)
    np.testing.assert_allclose(model, bayes, rtol=1e-6, atol=1e-5)
    assert (bayes >= 0).all() and bayes.max() > 0


def test_masked_diffusion_weights_average_to_the_exact_nll(tiny):
    """E over m ~ U{1..b} and a uniform m-subset of (b/m) * sum of -log p(slot | rest) is the
    exact NLL: checked by enumerating every mask, with framed_batch's own weights."""
    lang, ids, pairs, oracle = tiny
    prompt, answer = next((p, a) for p, a in pairs if answer_slots(len(a)) == 4)
    slots = answer + [ids.eos] * (4 - len(answer))
    expected = 0.0
    for m in range(1, 5):
        subsets = list(itertools.combinations(range(4), m))
        for masked in subsets:
            row = [ids.cls, *prompt, *[ids.mask if j in masked else t for j, t in enumerate(slots)], ids.sep]
            logp = oracle(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.bool))[0]
            ce = sum(-float(logp[1 + len(prompt) + j, slots[j]]) for j in masked)
            expected += (1 / 4) * (1 / len(subsets)) * (4 / m) * ce
    floor = likelihood.conditional_floor(lang, MODELS["cmlm-bert"], [(prompt, answer)], CONTEXT)[0]
    assert expected == pytest.approx(floor, rel=1e-9)


def test_framed_batch_weights_are_the_documented_ones(tiny):
    lang, ids, pairs, _ = tiny
    sentences = [p + a for p, a in pairs]
    for name in ("cmlm-bert", "ar-bert"):
        batch = framed_batch(MODELS[name], sentences, ids, np.random.default_rng(0), CONTEXT)
        norm = sum(len(valid_cuts(len(s), CONTEXT)) * (len(s) - k + 1) for s, k, _ in batch.examples)
        assert batch.norm == pytest.approx(norm)
        for s, k, w in batch.examples:
            assert w == len(valid_cuts(len(s), CONTEXT))
        has_target = batch.targets != -100
        assert ((batch.weights + batch.length_weights)[has_target] > 0).all()
        assert not (batch.weights * batch.length_weights).any()  # answer and length targets apart
        if name == "ar-bert":  # one answer target per example, weight n_valid * b
            assert int((batch.weights > 0).sum()) == len(sentences)


def test_floors_are_finite_and_consistent(tiny):
    lang, ids, pairs, _ = tiny
    bidirectional = likelihood.conditional_floor(lang, MODELS["cmlm-bert"], pairs, CONTEXT)
    causal = likelihood.conditional_floor(lang, MODELS["cmlm-gpt2"], pairs, CONTEXT)
    # knowing the bucket can only lower the floor, by exactly -log P(bucket | prompt)
    np.testing.assert_allclose(causal - bidirectional, likelihood.length_floor(lang, pairs, CONTEXT), atol=1e-9)
    assert all(math.isfinite(x) for x in causal)
