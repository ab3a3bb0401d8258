"""The reference language: sampling, exact validity, exact (conditional) log-probabilities."""
import math
import random
import numba
import numpy as np
import pytest

from benchmarks import language_numba
from benchmarks.grammar import VERBS_INTRANSITIVE, VERBS_SAY, VERBS_THINK, VERBS_TRANSITIVE
from benchmarks.language import ReferenceLanguage

OTHER_NUMBER = {a: b for pairs in (VERBS_INTRANSITIVE, VERBS_TRANSITIVE, VERBS_THINK, VERBS_SAY)
                for s, p in pairs for a, b in ((s, p), (p, s))}


@pytest.fixture(scope="module")
def lang():
    return ReferenceLanguage()


@pytest.fixture(scope="module")
def samples(lang):
    return lang.sample(3000, seed=7)


def test_samples_are_valid_seeded_and_bounded(lang, samples):
    assert all(lang.is_valid(s) for s in samples[:200])
    assert np.isfinite(lang.log_probs(samples)).all()
    assert lang.sample(50, seed=7) == samples[:50]
    assert lang.sample(50, seed=8) != samples[:50]
    lengths = np.array([len(s.split()) for s in samples])
    assert lengths.max() <= lang.max_len
    assert (lengths > 40).mean() < 0.01  # "sentences up to about 40 words"
    assert len(set(samples)) > 0.9 * len(samples)  # a spread-out, multimodal distribution


def test_constructions_occur(samples):
    words = {w for s in samples for w in s.split()}
    for marker in ('"', "(", "that", "because", "if", "when", "an", "these"):
        assert marker in words, marker


def _invalid(lang, texts):
    assert texts, "no corrupted example built"
    scores = lang.log_probs(texts)
    assert np.all(scores == -np.inf), [t for t, s in zip(texts, scores) if s > -np.inf][:3]
    assert not any(lang.is_valid(t) for t in texts[:20])


def test_broken_subject_verb_agreement_is_invalid(lang, samples):
    broken = []
    for s in samples[:500]:
        words = s.split()
        i = next(i for i, w in enumerate(words) if w in OTHER_NUMBER)  # every clause has a verb
        broken.append(" ".join(words[:i] + [OTHER_NUMBER[words[i]]] + words[i + 1:]))
    _invalid(lang, broken)


def test_agreement_across_a_relative_clause(lang):
    good = "the cats that the dog chases sleep ."
    assert lang.is_valid(good)
    assert lang.log_prob("the cats that the dog chases sleeps .") == -math.inf
    assert lang.log_prob("the cats ( that the dog chases ) sleep .") > -math.inf
    assert lang.log_prob("the cat near the old dogs sleeps .") > -math.inf
    assert lang.log_prob("the cat near the old dogs sleep .") == -math.inf


def test_broken_determiner_agreement_is_invalid(lang, samples):
    swaps = {"a": "an", "an": "a", "this": "these", "these": "this", "every": "many", "many": "every"}
    broken = [" ".join(swaps.get(w, w) for w in s.split()) for s in samples[:500]
              if any(w in swaps for w in s.split())]
    _invalid(lang, broken)


def test_dropped_closing_quote_or_bracket_is_invalid(lang, samples):
    broken = []
    for s in samples:
        words = s.split()
        for mark in ('"', ")"):
            if mark in words:
                last = len(words) - 1 - words[::-1].index(mark)
                broken.append(" ".join(words[:last] + words[last + 1:]))
    assert len(broken) > 20
    _invalid(lang, broken)


def test_shuffled_words_are_invalid(lang, samples):
    rng = random.Random(0)
    broken = []
    for s in samples[:500]:
        words = s.split()
        rng.shuffle(words)
        if words[-1] == ".":  # "." only ends a sentence: moving it away is always an error
            words[0], words[-1] = words[-1], words[0]
        broken.append(" ".join(words))
    _invalid(lang, broken)
    # shuffles that keep the final "." are almost never valid either
    kept = []
    for s in samples[:500]:
        body = s.split()[:-1]
        rng.shuffle(body)
        kept.append(" ".join(body + ["."]))
    assert np.mean(np.isfinite(lang.log_probs(kept))) < 0.05


def test_unknown_words_and_empty_text_are_invalid(lang):
    assert lang.log_prob("the unicorn sleeps .") == -math.inf
    assert lang.log_prob("") == -math.inf
    assert lang.log_prob("the cat sleeps") == -math.inf  # no final "."
    assert lang.log_prob("the cat sleeps . .") == -math.inf


def test_tiny_grammar_probabilities_sum_to_one():
    tiny = ReferenceLanguage.tiny()
    sentences, probs = zip(*tiny.enumerate())
    assert len(set(sentences)) == len(sentences)  # unambiguous: one derivation per sentence
    scored = np.exp(tiny.log_probs(list(sentences)))
    assert scored.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(scored, probs, rtol=1e-9)
    # prefix probability = total probability of the sentences that start with the prefix
    prefixes = ["the", "the cats", "a cat that", "these cats ( that the", "the cat that the cats"]
    mass = dict.fromkeys(prefixes, 0.0)
    for s, p in zip(sentences, probs):
        for prefix in prefixes:
            if s.startswith(prefix + " "):
                mass[prefix] += p
    np.testing.assert_allclose(np.exp(tiny.prefix_log_probs(prefixes)), list(mass.values()), rtol=1e-9)
    assert min(mass.values()) > 0
    assert tiny.prefix_log_prob("the cat that cats") == -math.inf


def test_next_word_distribution_sums_to_one(lang, samples):
    """sum_w P(w | prompt) + P(end | prompt) = 1 on the full grammar, quotes and all."""
    quoted = [s for s in samples if '"' in s][:2]
    prompts = [" ".join(s.split()[:k]) for s in samples[:3] + quoted for k in (0, 2, 5, 9)]
    for prompt in prompts:
        extended = np.exp(lang.prefix_log_probs([f"{prompt} {w}" for w in lang.words]))
        ends = math.exp(lang.log_prob("", prompt))
        total = extended.sum() / math.exp(lang.prefix_log_prob(prompt)) + ends
        assert total == pytest.approx(1.0, abs=1e-9), prompt


def test_conditional_log_prob_chain_rule(lang, samples):
    for s in samples[:50]:
        words = s.split()
        k = len(words) // 2
        prompt, rest = " ".join(words[:k]), " ".join(words[k:])
        assert lang.log_prob(rest, prompt) == pytest.approx(lang.log_prob(s) - lang.prefix_log_prob(prompt))
        assert lang.log_prob(rest, prompt) <= 0
    assert lang.log_prob("sleeps .", prompt="the cats") == -math.inf
    assert lang.log_prob("sleep .", prompt="cats the") == -math.inf  # the prompt is no prefix


def test_entropy_rate_exact_matches_monte_carlo(lang):
    exact = lang.entropy_rate()
    estimate, stderr = lang.estimate_entropy_rate(20000, seed=3)
    assert abs(exact - estimate) < 4 * stderr
    assert 1.0 < exact < 5.0


def test_scoring_and_sampling_run_compiled(lang, samples):
    """The hot loops run as numba machine code, not as Python (speed itself is not asserted)."""
    lang.log_probs(samples[:10])
    for loop in (language_numba.score_batch, language_numba.sample_batch):
        assert isinstance(loop, numba.core.registry.CPUDispatcher) and loop.signatures, loop


def test_bad_arguments(lang):
    with pytest.raises(ValueError, match="n must be"):
        lang.sample(-1, seed=0)
    with pytest.raises(ValueError, match="seed must be"):
        lang.sample(3, seed=-5)
    with pytest.raises(TypeError, match="texts must be str"):
        lang.log_prob(3)
    with pytest.raises(ValueError, match="one entry per text"):
        lang.log_probs(["a"], ["b", "c"])


def test_continuation_lengths_match_brute_force():
    """The exact distribution of the words after a prompt, against enumerating the tiny grammar."""
    tiny = ReferenceLanguage.tiny()
    sentences = tiny.enumerate()
    prompts = ["", "the", "the cats", "a cat that", "these cats ( that the", "the cat sleeps .", "cat the"]
    dist = tiny.continuation_lengths(prompts)
    for prompt, row in zip(prompts, dist):
        words = prompt.split()
        brute = np.zeros(tiny.max_len + 1)
        for s, p in sentences:
            if s.split()[:len(words)] == words:
                brute[len(s.split()) - len(words)] += p
        if brute.sum() == 0:
            assert row.sum() == 0, prompt  # no sentence starts so
            continue
        np.testing.assert_allclose(row, brute / brute.sum(), atol=1e-12, err_msg=prompt)
