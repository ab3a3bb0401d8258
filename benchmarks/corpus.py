"""Training and held-out sentences of the reference language, as token ids of the shared tokenizer.

Two kinds of training data (the experiment's data axis):
- fresh: every step draws new sentences (seed mixed with the step), so no sentence is seen
  twice in expectation and the model cannot memorise;
- repeated: a fixed corpus of `corpus_size` sentences, visited in epochs of seeded permutations.

Either way the sentences of step s depend only on (seed, s), so a resumed or repeated run sees
exactly the same data. Word ids are the reference language's terminal ids shifted past the
tokenizer's special tokens (benchmarks/tokenizer.py puts the specials first, then the words in
the language's order).
"""
import numpy as np

from benchmarks import language_numba
from benchmarks.tokenizer import SPECIALS

FIRST_WORD_ID = len(SPECIALS)
DATA_KINDS = ("fresh", "repeated")


def sample_ids(lang, n, seed):
    """n sentences as lists of token ids (no special tokens)."""
    t = lang._tables
    tokens, offsets = language_numba.sample_batch(
        n, seed, t["nt_first_rule"], t["nt_num_rules"], t["rule_cumprob"], t["rhs"], t["rhs_start"],
        t["rhs_len"], t["start"], len(lang.terminals), lang.end, lang.max_len)
    ids = (tokens + FIRST_WORD_ID).tolist()
    return [ids[offsets[i]:offsets[i + 1]] for i in range(n)]


def ids_to_text(lang, ids):
    return " ".join(lang.words[i - FIRST_WORD_ID] for i in ids)


def text_to_ids(lang, text):
    return [lang.word_id[w] + FIRST_WORD_ID for w in text.split()]


def _mix(seed, step):
    """A 32-bit seed for step `step` of a run seeded `seed` (distinct for distinct pairs)."""
    return (seed * 1_000_003 + step * 7_919 + 12_345) % (2**32)


class SentenceStream:
    def __init__(self, lang, data="fresh", seed=0, corpus_size=50_000):
        if data not in DATA_KINDS:
            raise ValueError(f"data must be one of {DATA_KINDS}, got {data!r}")
        self.lang, self.data, self.seed = lang, data, seed
        self.corpus = sample_ids(lang, corpus_size, seed) if data == "repeated" else None
        self._epoch_orders = {}

    def batch(self, step, batch_size):
        """The sentences of training step `step`."""
        if self.data == "fresh":
            return sample_ids(self.lang, batch_size, _mix(self.seed, step))
        start = step * batch_size
        return [self.corpus[self._index(i)] for i in range(start, start + batch_size)]

    def _index(self, i):
        epoch, offset = divmod(i, len(self.corpus))
        if epoch not in self._epoch_orders:
            rng = np.random.default_rng(_mix(self.seed, epoch) + 1)
            self._epoch_orders = {epoch: rng.permutation(len(self.corpus))}  # keep one epoch
        return int(self._epoch_orders[epoch][offset])


def heldout_pairs(lang, n, seed, fits=None):
    """n (prompt ids, answer ids) pairs: held-out sentences cut after 2..6 words (at most all
    but one), keeping only cuts `fits(prompt_words, answer_words)` accepts (e.g. the answer
    frame fits the context); sentences are drawn until n pairs are found."""
    rng = np.random.default_rng(seed)
    pairs, batch = [], 0
    while len(pairs) < n:
        for s in sample_ids(lang, 2 * n, _mix(seed, batch) ^ 0x5EED):
            if len(s) < 3:
                continue
            k = int(rng.integers(2, min(6, len(s) - 1) + 1))
            if fits is None or fits(k, len(s) - k):
                pairs.append((s[:k], s[k:]))
        batch += 1
    return pairs[:n]
