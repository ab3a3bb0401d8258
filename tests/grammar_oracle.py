"""A "model" whose predictions are the tiny grammar's exact conditionals, by brute force.

For a framed row `[CLS] prompt slots [SEP]` it enumerates every sentence of the tiny language
that starts with the prompt and whose answer fits the frame's bucket and agrees with the
visible slots, and returns at each masked slot the log of that slot's exact marginal; for a
length-head row `[CLS] prompt [MASK] [SEP]` the exact distribution of the frame sizes. It
knows the prompts it will be asked about (a row alone does not say where its prompt ends).
Nothing here shares code with benchmarks/likelihood.py, which it is used to check.
"""
import math

import torch

from benchmarks.corpus import text_to_ids
from benchmarks.frame import ANSWER_SLOTS

NEG = -1e30


class GrammarOracle:
    def __init__(self, lang, ids, prompts, context=64):
        self.ids, self.context = ids, context
        self.prompts = {tuple(p) for p in prompts}
        self.answers = {p: [] for p in self.prompts}  # prompt -> [(answer ids, probability)]
        self._memo = {}
        for text, prob in lang.enumerate():
            s = text_to_ids(lang, text)
            for k in {len(p) for p in self.prompts}:
                if tuple(s[:k]) in self.answers:
                    self.answers[tuple(s[:k])].append((s[k:], prob))

    def _frame(self, row):
        """(prompt, slots) of a framed row: the known prompt it starts with."""
        body = row[1:-1]
        for k in range(len(body) + 1):
            if tuple(body[:k]) in self.prompts and (len(body) - k in ANSWER_SLOTS or len(body) - k == 1):
                return body[:k], body[k:]
        raise ValueError(f"row {row} starts with none of the oracle's prompts")

    def _candidates(self, prompt, size):
        """(padded answer slots, probability) of the sentences after `prompt` fitting a frame of `size`."""
        key = (tuple(prompt), size)
        if key not in self._memo:
            self._memo[key] = self._enumerate(prompt, size)
        return self._memo[key]

    def _enumerate(self, prompt, size):
        k, out = len(prompt), []
        for answer, p in self.answers[tuple(prompt)]:
            slots = -(-(len(answer) + 1) // 4) * 4
            if size == 1:  # the length head: the answer's frame, among those that fit the context
                if 2 + k + slots <= self.context:
                    out.append(([self.ids.length_id(slots)], p))
            elif slots == size:
                out.append((answer + [self.ids.eos] * (size - len(answer)), p))
        if size == 1:  # merge equal length tokens
            merged = {}
            for (token,), p in out:
                merged[token] = merged.get(token, 0.0) + p
            out = [([t], p) for t, p in merged.items()]
        return out

    def __call__(self, input_ids, valid):
        b, n = input_ids.shape
        logits = torch.full((b, n, self.ids.vocab), NEG, dtype=torch.float64)
        for r in range(b):
            row = input_ids[r, : int(valid[r].sum())].tolist()
            prompt, slots = self._frame(row)
            start = 1 + len(prompt)
            cands = [(c, p) for c, p in self._candidates(prompt, len(slots))
                     if all(v == self.ids.mask or v == t for v, t in zip(slots, c))]
            total = sum(p for _, p in cands)
            for j, v in enumerate(slots):
                if v != self.ids.mask:
                    continue
                mass = {}
                for c, p in cands:
                    mass[c[j]] = mass.get(c[j], 0.0) + p
                for token, m in mass.items():
                    logits[r, start + j, token] = math.log(m / total)
        return logits
