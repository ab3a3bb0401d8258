"""Hot loops of the reference language: LL(1) scoring and top-down sampling, compiled by numba.

Symbols are ints: terminals 0..n_terms-1, nonterminal k is n_terms + k. Rule r rewrites its
nonterminal to rhs[rhs_start[r] : rhs_start[r] + rhs_len[r]]; `table[k, t]` is the only rule of
nonterminal k that can start with terminal t (-1: none), which is what makes parsing a single
left-to-right pass with a stack.
"""
import numpy as np
from numba import njit

STACK_SIZE = 4096


@njit(cache=True)
def score_batch(tokens, offsets, add_end, table, rhs, rhs_start, rhs_len, rule_logp, start, n_terms, end):
    """Log-probability of each token sequence tokens[offsets[i]:offsets[i+1]] (ids < 0: unknown word).

    Leftmost derivation, expanded only as far as the next token requires. With add_end the
    end marker is appended and the result is log P(sentence); without it, the derivation stops
    after the last token and the result is log P(prefix): the total probability of all sentences
    that start with these tokens (every rule used is forced by the tokens, and what is left on
    the stack derives some completion with probability 1). -inf when no derivation exists.
    """
    n = offsets.shape[0] - 1
    out = np.empty(n, dtype=np.float64)
    stack = np.empty(STACK_SIZE, dtype=np.int32)
    for i in range(n):
        lo, hi = offsets[i], offsets[i + 1]
        length = hi - lo + (1 if add_end else 0)
        sp = 1
        stack[0] = start
        logp = 0.0
        for j in range(length):
            tok = tokens[lo + j] if lo + j < hi else end
            if tok < 0:
                logp = -np.inf
                break
            while True:  # expand the top until it is a terminal, then match it
                if sp == 0:
                    logp = -np.inf
                    break
                sym = stack[sp - 1]
                if sym < n_terms:
                    if sym != tok:
                        logp = -np.inf
                    sp -= 1
                    break
                r = table[sym - n_terms, tok]
                if r < 0 or sp - 1 + rhs_len[r] > STACK_SIZE:
                    logp = -np.inf
                    break
                logp += rule_logp[r]
                sp -= 1
                s0 = rhs_start[r]
                for q in range(rhs_len[r] - 1, -1, -1):
                    stack[sp] = rhs[s0 + q]
                    sp += 1
            if logp == -np.inf:
                break
        out[i] = logp
    return out


@njit(cache=True)
def sample_batch(n, seed, nt_first_rule, nt_num_rules, rule_cumprob, rhs, rhs_start, rhs_len, start, n_terms, end, max_len):
    """n sentences as (flat token ids, offsets), the end marker left out; numba's own seeded RNG."""
    np.random.seed(seed)
    tokens = np.empty(n * max_len, dtype=np.int32)
    offsets = np.zeros(n + 1, dtype=np.int64)
    stack = np.empty(STACK_SIZE, dtype=np.int32)
    pos = 0
    for i in range(n):
        sp = 1
        stack[0] = start
        while sp > 0:
            sp -= 1
            sym = stack[sp]
            if sym < n_terms:
                if sym != end:
                    tokens[pos] = sym
                    pos += 1
                continue
            k = sym - n_terms
            first = nt_first_rule[k]
            last = first + nt_num_rules[k] - 1
            u = np.random.random()
            r = first
            while r < last and u >= rule_cumprob[r]:
                r += 1
            s0 = rhs_start[r]
            for q in range(rhs_len[r] - 1, -1, -1):
                stack[sp] = rhs[s0 + q]
                sp += 1
        offsets[i + 1] = pos
    return tokens[:pos], offsets
