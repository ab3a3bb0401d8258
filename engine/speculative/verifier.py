"""Verification: the target's logits at every drafted position decide what each request emits.

A sampling request with d drafts has d + 1 logits rows (engine/runner.py): row j scores
output position n + j (n = tokens generated so far), the position of draft j, and row d the
position after the last draft. Let a be the number of drafts accepted, left to right:
  greedy   draft j is accepted while it equals the target's argmax at row j; the request
           emits drafts 0..a-1 and then the argmax at row a: exactly the tokens plain
           greedy decoding produces, one step for up to d + 1 of them.
  sampled  draft j is accepted by the rejection rule (engine/speculative/rejection.py);
           at the first rejection the request emits the residual draw there, and when all
           d are accepted, the target's own draw at row d (the autoregressive sampler's
           kernel and seed, so a step without drafts samples exactly as without speculation).
The min_tokens ban applies row by row (row j is `j` tokens ahead of the output), as it
would one token at a time; max_tokens and stop conditions are the output processor's,
applied to the emitted tokens in order.
"""
from dataclasses import dataclass

import torch

from engine.speculative.rejection import ACCEPT_STREAM, RESIDUAL_STREAM, draw_seeds, rejection_sample, sampling_probs


@dataclass
class Verdict:
    tokens: list[list[int]]  # per sampling request: its accepted drafts, then the target's own token
    num_accepted: list[int]
    logprobs: list[list]  # per request, per emitted token: {token: logprob} or None


class Verifier:
    def __init__(self, sampler):
        self.sampler = sampler  # the autoregressive sampler: target draws, min_tokens ban, logprobs

    def __call__(self, logits, greedy, requests, proposal_tokens, draft_probs) -> Verdict:
        """logits / greedy: the runner's rows; requests: the step's sampling requests;
        proposal_tokens: each one's drafts; draft_probs: q rows of the sampled ones' drafts."""
        firsts, plain_rows, plain_reqs, plain_offsets = [], [], [], []
        checked_rows, checked_reqs, checked_offsets, checked_drafts = [], [], [], []
        row = 0
        for req, drafts in zip(requests, proposal_tokens):
            firsts.append(row)
            d = len(drafts)
            own = range(d + 1) if req.params.temperature == 0 else range(d, d + 1)
            plain_rows += [row + j for j in own]
            plain_reqs += [req] * len(own)
            plain_offsets += list(own)
            if req.params.temperature > 0 and d:
                checked_rows += range(row, row + d)
                checked_reqs += [req] * d
                checked_offsets += range(d)
                checked_drafts += drafts
            row += d + 1
        device = logits.device
        index = torch.tensor(plain_rows, device=device)
        plain = self.sampler.sample(logits.index_select(0, index), greedy.index_select(0, index),
                                    plain_reqs, plain_offsets)
        accepted, residual = self._rejection(logits, checked_rows, checked_reqs, checked_offsets, checked_drafts,
                                             draft_probs)

        tokens, num_accepted, emitted_rows = [], [], []
        plain_at = dict(zip(plain_rows, plain))
        checked_at = {r: (ok, t) for r, ok, t in zip(checked_rows, accepted, residual)}
        for req, drafts, first in zip(requests, proposal_tokens, firsts):
            out = []
            for j, token in enumerate(drafts):
                if req.params.temperature == 0:
                    ok, correction = plain_at[first + j] == token, plain_at[first + j]
                else:
                    ok, correction = checked_at[first + j]
                if not ok:
                    out.append(correction)
                    break
                out.append(token)
            else:
                out.append(plain_at[first + len(drafts)])
            tokens.append(out)
            num_accepted.append(len(out) - 1)
            emitted_rows.append(range(first, first + len(out)))
        return Verdict(tokens, num_accepted, self._logprobs(logits, requests, tokens, emitted_rows))

    def _rejection(self, logits, rows, requests, offsets, drafts, draft_probs):
        """(accepted, residual token) per sampled draft row, as lists."""
        if not rows:
            return [], []
        device = logits.device
        target = self.sampler.ban(logits.index_select(0, torch.tensor(rows, device=device)), requests, offsets)
        temperature, top_k, top_p, _ = self.sampler.row_params(requests, device)
        p = sampling_probs(target, temperature, top_k, top_p)
        positions = [r.num_generated + j for r, j in zip(requests, offsets)]
        accepted, residual = rejection_sample(
            p, draft_probs, torch.tensor(drafts, device=device), draw_seeds(requests, positions, ACCEPT_STREAM, device),
            draw_seeds(requests, positions, RESIDUAL_STREAM, device))
        return accepted.tolist(), residual.tolist()

    def _logprobs(self, logits, requests, tokens, emitted_rows) -> list:
        """{token: logprob} (the target's, temperature 1) of every emitted token, where asked."""
        wanted = [i for i, req in enumerate(requests) if req.logprobs is not None]
        if not wanted:
            return [[None] * len(t) for t in tokens]
        rows = [r for i in wanted for r in emitted_rows[i]]
        row_reqs = [requests[i] for i in wanted for _ in emitted_rows[i]]
        flat = self.sampler.logprobs(logits.index_select(0, torch.tensor(rows, device=logits.device)), row_reqs,
                                     [t for i in wanted for t in tokens[i]])
        out, at = [[None] * len(t) for t in tokens], 0
        for i in wanted:
            out[i] = flat[at: at + len(tokens[i])]
            at += len(tokens[i])
        return out
