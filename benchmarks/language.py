"""The reference language: seeded sampling, exact validity and exact log-probabilities.

A text is a sequence of words separated by whitespace (punctuation marks are words of their
own: `the cat sleeps .`). The grammar (`grammar.py`) is compiled here into LL(1) tables and
checked to be LL(1), hence unambiguous: every valid sentence has exactly one derivation, and
its probability is the product of the probabilities of the rules in it.

- `log_prob(text)`: log P(sentence), where the sentence ends after the last word (the end
  marker, which a causal LM predicts as its eos token, is part of the event).
- `log_prob(text, prompt)`: log P(continuation | prompt) = log P(prompt + text as a complete
  sentence) - log P(prefix = prompt), where P(prefix) is the total probability of all sentences
  whose first words are the prompt's words (exact: see `language_numba.score_batch`). -inf when
  the prompt is no sentence's prefix or the whole is not a sentence.
- `continuation_lengths(prompts)`: the exact distribution of the number of words that follow
  each prompt (the parser's stack after the prompt generates the rest, each stack symbol
  independently, so the distribution is the convolution of the symbols' own length
  distributions). With it, a model trained on continuations of restricted lengths (a length
  bucket, a context limit) has an exact floor: log P(cont | prompt, length in A) =
  log P(cont | prompt) - log P(length in A | prompt).
- `entropy_rate()`: exact nats per token, tokens = words + the end marker, i.e. the best
  possible per-token loss of a causal LM on `<bos> sentence <eos>` (the derivation entropy of an
  unambiguous grammar, from expected rule counts); `estimate_entropy_rate` is the Monte Carlo
  check of it.
"""
import math

import numpy as np

from benchmarks import language_numba as kernels
from benchmarks.grammar import END, Grammar, GrammarConfig, tiny_config


class ReferenceLanguage:
    def __init__(self, config: GrammarConfig = GrammarConfig()):
        grammar = Grammar(config)
        self.config = config
        self.words = grammar.words()
        self.terminals = self.words + [END]
        self.word_id = {w: i for i, w in enumerate(self.terminals) if w != END}
        self.end = len(self.words)
        self.nonterminals, self._rules = _collect(grammar, set(self.terminals))
        self._compile()

    @classmethod
    def tiny(cls):
        """A small instance whose sentences can all be enumerated (tests)."""
        return cls(tiny_config())

    # --- public API -----------------------------------------------------------------------
    def sample(self, n, seed):
        """n sentences drawn from the grammar; the same (n, seed) gives the same list."""
        return [" ".join(ws) for ws in self.sample_words(n, seed)]

    def sample_words(self, n, seed):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        if not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
        t = self._tables
        tokens, offsets = kernels.sample_batch(
            n, seed, t["nt_first_rule"], t["nt_num_rules"], t["rule_cumprob"], t["rhs"],
            t["rhs_start"], t["rhs_len"], t["start"], len(self.terminals), self.end, self.max_len)
        words = [self.terminals[i] for i in tokens]
        return [words[offsets[i]:offsets[i + 1]] for i in range(n)]

    def is_valid(self, text):
        return self.log_prob(text) > -math.inf

    def log_prob(self, text, prompt=""):
        return float(self.log_probs([text], [prompt])[0])

    def log_probs(self, texts, prompts=None):
        """Batch `log_prob`: one numba pass over all texts (and one over their prompts)."""
        if prompts is None:
            return self._score([_split(t, "texts") for t in texts], add_end=True)
        if len(prompts) != len(texts):
            raise ValueError(f"prompts must have one entry per text: {len(prompts)} != {len(texts)}")
        heads = [_split(p, "prompts") for p in prompts]
        full = self._score([h + _split(t, "texts") for h, t in zip(heads, texts)], add_end=True)
        prefix = self._score(heads, add_end=False)
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(prefix), full - prefix, -np.inf)

    def prefix_log_prob(self, prompt):
        """log of the total probability of the sentences that start with `prompt`'s words."""
        return float(self.prefix_log_probs([prompt])[0])

    def prefix_log_probs(self, prompts):
        return self._score([_split(p, "prompts") for p in prompts], add_end=False)

    def continuation_lengths(self, prompts):
        """float64 [len(prompts), max_len + 1]: row i is P(the continuation of prompts[i] has
        exactly L words), L = 0..max_len; an all-zero row when the prompt is no prefix."""
        out = np.zeros((len(prompts), self.max_len + 1))
        for i, prompt in enumerate(prompts):
            stack = self._stack_after(_split(prompt, "prompts"))
            if stack is None:
                continue
            dist = np.zeros(self.max_len + 1)
            dist[0] = 1.0
            for sym in stack:
                dist = np.convolve(dist, self._symbol_lengths(sym))[: self.max_len + 1]
            out[i] = dist
        return out

    def entropy_rate(self):
        """Exact entropy per token (nats), tokens = words + end marker."""
        return self.sentence_entropy() / self.mean_tokens()

    def sentence_entropy(self):
        """H(sentence) in nats = sum over nonterminals of expected count x entropy of its choice."""
        return float(self._expected_counts() @ self._choice_entropy)

    def mean_tokens(self):
        """Expected words per sentence + 1 (the end marker)."""
        return float(self._expected_counts() @ self._terminals_per_expansion)

    def estimate_entropy_rate(self, n, seed):
        """Monte Carlo (rate, standard error) from n samples and their exact log-probabilities."""
        sentences = self.sample_words(n, seed)
        nll = -self._score(sentences, add_end=True)
        tokens = np.array([len(s) + 1 for s in sentences], dtype=np.float64)
        rate = nll.sum() / tokens.sum()
        # delta method for a ratio of means
        resid = nll - rate * tokens
        stderr = resid.std(ddof=1) / math.sqrt(n) / tokens.mean()
        return float(rate), float(stderr)

    def enumerate(self, limit=1_000_000):
        """Every sentence with its derivation probability (small configs only: raises past limit)."""
        out = []
        todo = [((self.nonterminals[0],), (), 1.0)]
        while todo:
            stack, words, p = todo.pop()
            while stack and stack[0] in self._terminal_set:
                words, stack = words + (stack[0],) if stack[0] != END else words, stack[1:]
            if not stack:
                out.append((" ".join(words), p))
                if len(out) > limit:
                    raise ValueError(f"more than limit={limit} sentences; use a smaller GrammarConfig")
                continue
            for prob, rhs in self._rules[stack[0]]:
                todo.append((tuple(rhs) + stack[1:], words, p * prob))
        return out

    # --- lengths --------------------------------------------------------------------------------
    def _stack_after(self, words):
        """The LL(1) parser's stack (symbol ids) after reading `words`, None if no prefix."""
        t, n_terms = self._tables, len(self.terminals)
        stack = [int(t["start"])]
        for word in words:
            tok = self.word_id.get(word)
            if tok is None:
                return None
            while True:
                if not stack:
                    return None
                sym = stack.pop()
                if sym < n_terms:
                    if sym != tok:
                        return None
                    break
                r = t["table"][sym - n_terms, tok]
                if r < 0:
                    return None
                s0 = t["rhs_start"][r]
                stack.extend(int(x) for x in t["rhs"][s0: s0 + t["rhs_len"][r]][::-1])
        return stack

    def _symbol_lengths(self, sym):
        """P(symbol derives exactly L words), L = 0..max_len (the end marker is no word)."""
        if sym not in self._length_memo:
            n_terms, t = len(self.terminals), self._tables
            dist = np.zeros(self.max_len + 1)
            if sym < n_terms:
                dist[0 if sym == self.end else 1] = 1.0
            else:
                k = sym - n_terms
                for r in range(t["nt_first_rule"][k], t["nt_first_rule"][k] + t["nt_num_rules"][k]):
                    part = np.zeros(self.max_len + 1)
                    part[0] = 1.0
                    s0 = t["rhs_start"][r]
                    for child in t["rhs"][s0: s0 + t["rhs_len"][r]]:
                        part = np.convolve(part, self._symbol_lengths(int(child)))[: self.max_len + 1]
                    dist += math.exp(t["rule_logp"][r]) * part
            self._length_memo[sym] = dist
        return self._length_memo[sym]

    # --- compilation ------------------------------------------------------------------------
    def _score(self, word_lists, add_end):
        ids = [self.word_id.get(w, -1) for ws in word_lists for w in ws]
        tokens = np.array(ids, dtype=np.int32)
        offsets = np.zeros(len(word_lists) + 1, dtype=np.int64)
        np.cumsum([len(ws) for ws in word_lists], out=offsets[1:])
        t = self._tables
        return kernels.score_batch(tokens, offsets, add_end, t["table"], t["rhs"], t["rhs_start"],
                                   t["rhs_len"], t["rule_logp"], t["start"], len(self.terminals), self.end)

    def _compile(self):
        n_terms = len(self.terminals)
        sym = {w: i for i, w in enumerate(self.terminals)}
        sym.update({nt: n_terms + k for k, nt in enumerate(self.nonterminals)})
        rhs, rhs_start, rhs_len, logp, cum, first_rule, num_rules = [], [], [], [], [], [], []
        for nt in self.nonterminals:
            first_rule.append(len(logp))
            num_rules.append(len(self._rules[nt]))
            acc = 0.0
            for p, r in self._rules[nt]:
                rhs_start.append(len(rhs))
                rhs_len.append(len(r))
                rhs.extend(sym[s] for s in r)
                logp.append(math.log(p))
                acc += p
                cum.append(acc)
        self._terminal_set = set(self.terminals)
        table = self._ll1_table(sym, first_rule)
        i32 = lambda xs: np.array(xs, dtype=np.int32)
        self._tables = dict(
            table=table, rhs=i32(rhs), rhs_start=i32(rhs_start), rhs_len=i32(rhs_len),
            rule_logp=np.array(logp), rule_cumprob=np.array(cum), nt_first_rule=i32(first_rule),
            nt_num_rules=i32(num_rules), start=sym[self.nonterminals[0]])
        self.max_len = self._longest() - 1  # without the end marker
        self._length_memo = {}
        self._expectations(sym)

    def _ll1_table(self, sym, first_rule):
        """Predict sets from FIRST/FOLLOW; raises if two alternatives share a lookahead word."""
        nts, rules, terms = self.nonterminals, self._rules, self._terminal_set
        nullable = {nt: False for nt in nts}
        first = {nt: set() for nt in nts}
        follow = {nt: set() for nt in nts}

        def first_of(seq):
            out = set()
            for s in seq:
                if s in terms:
                    out.add(s)
                    return out, False
                out |= first[s]
                if not nullable[s]:
                    return out, False
            return out, True

        changed = True
        while changed:
            changed = False
            for nt in nts:
                for _, r in rules[nt]:
                    f, null = first_of(r)
                    if not f <= first[nt] or (null and not nullable[nt]):
                        first[nt] |= f
                        nullable[nt] |= null
                        changed = True
                    for i, s in enumerate(r):
                        if s in terms:
                            continue
                        f, null = first_of(r[i + 1:])
                        add = f | (follow[nt] if null else set())
                        if not add <= follow[s]:
                            follow[s] |= add
                            changed = True
        table = np.full((len(nts), len(self.terminals)), -1, dtype=np.int32)
        for k, nt in enumerate(nts):
            for j, (_, r) in enumerate(rules[nt]):
                f, null = first_of(r)
                for w in f | (follow[nt] if null else set()):
                    t = sym[w]
                    if table[k, t] >= 0:
                        raise ValueError(f"grammar is not LL(1): {nt} has two alternatives for {w!r}")
                    table[k, t] = first_rule[k] + j
        return table

    def _longest(self):
        """Longest sentence in tokens (the grammar is finite: recursion is bounded by depths)."""
        memo = {}

        def longest(s, path):
            if s in self._terminal_set:
                return 1
            if s in path:
                raise ValueError(f"grammar is recursive through {s}; bound it with the config depths")
            if s not in memo:
                memo[s] = max(sum(longest(x, path | {s}) for x in r) for _, r in self._rules[s])
            return memo[s]

        return longest(self.nonterminals[0], frozenset())

    def _expectations(self, sym):
        """Mean matrix of the branching process: expected child counts per expansion."""
        n_terms, k = len(self.terminals), len(self.nonterminals)
        mean = np.zeros((k, k))
        self._choice_entropy = np.zeros(k)
        self._terminals_per_expansion = np.zeros(k)
        for a, nt in enumerate(self.nonterminals):
            for p, r in self._rules[nt]:
                self._choice_entropy[a] -= p * math.log(p)
                for s in r:
                    if s in self._terminal_set:
                        self._terminals_per_expansion[a] += p
                    else:
                        mean[a, sym[s] - n_terms] += p
        self._mean = mean

    def _expected_counts(self):
        """c = e_start + M^T c: expected number of expansions of each nonterminal per sentence."""
        e = np.zeros(len(self.nonterminals))
        e[0] = 1.0
        return np.linalg.solve(np.eye(len(e)) - self._mean.T, e)


def _split(text, name):
    if not isinstance(text, str):
        raise TypeError(f"{name} must be str, got {type(text).__name__}")
    return text.split()


def _collect(grammar, terminals):
    """Nonterminals reachable from the start (start first) and their validated rules."""
    order, rules, todo, seen = [grammar.start], {}, [grammar.start], {grammar.start}
    while todo:
        nt = todo.pop()
        alts = grammar.rules(nt)
        total = sum(p for p, _ in alts)
        if abs(total - 1.0) > 1e-9 or any(p <= 0 for p, _ in alts):
            raise ValueError(f"rule probabilities of {nt} must be positive and sum to 1, got {total}")
        rules[nt] = alts
        for _, rhs in alts:
            for s in rhs:
                if isinstance(s, str):
                    if s not in terminals:
                        raise ValueError(f"word {s!r} in a rule of {nt} is not in the vocabulary")
                elif s not in seen:
                    seen.add(s)
                    order.append(s)
                    todo.append(s)
    return order, rules
