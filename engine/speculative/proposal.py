"""What a drafter hands to the verifier, and how a draft slot's token is chosen.

A greedy request's draft token is the draft model's argmax. A sampled request's is a draw
from q = sampling_probs(draft logits, the request's temperature / top_k / top_p), seeded
by mix_seed(seed, output position, DRAFT_STREAM); q is kept, fixed before verification,
and the verifier tests the token against it.
"""
from dataclasses import dataclass

import torch

from engine.sampler import Sampler
from engine.speculative.rejection import DRAFT_STREAM, draw, draw_seeds, sampling_probs


@dataclass
class Proposal:
    token_ids: list[list[int]]  # per request of the step, its draft tokens (possibly none)
    # fp32 [R, V]: q of every draft token of the sampled requests, request by request in
    # batch order and slot order within a request; None when no sampled request drafted.
    probs: torch.Tensor | None


def pick(logits: torch.Tensor, requests: list, positions: list[int]):
    """Draft tokens for rows of draft logits [R, V] (row r: slot deciding output position
    positions[r] of requests[r]) -> (tokens list[int], q [S, V] of the sampled rows or None,
    the indices of those rows)."""
    tokens = logits.argmax(dim=-1)
    sampled = [r for r, req in enumerate(requests) if req.params.temperature > 0]
    q = None
    if sampled:
        device = logits.device
        index = torch.tensor(sampled, device=device)
        chosen = [requests[r] for r in sampled]
        temperature, top_k, top_p, _ = Sampler.row_params(chosen, device)
        q = sampling_probs(logits.index_select(0, index), temperature, top_k, top_p)
        tokens[index] = draw(q, draw_seeds(chosen, [positions[r] for r in sampled], DRAFT_STREAM, device))
    return tokens.tolist(), q, sampled


class ProposalBuilder:
    """Collects draft tokens slot by slot (each request's slots in increasing order)."""

    def __init__(self, num_requests: int):
        self.token_ids: list[list[int]] = [[] for _ in range(num_requests)]
        self._q: list[torch.Tensor] = []
        self._q_keys: list[tuple[int, int]] = []  # (request index, slot) of each q row

    def add(self, request_indices: list[int], slots: list[int], tokens: list[int], q, sampled_rows: list[int]) -> None:
        """Rows of one draft forward: row r fills slot slots[r] of request request_indices[r]."""
        for i, token in zip(request_indices, tokens):
            self.token_ids[i].append(token)
        if q is not None:
            self._q.append(q)
            self._q_keys += [(request_indices[r], slots[r]) for r in sampled_rows]

    def build(self) -> Proposal:
        if not self._q:
            return Proposal(self.token_ids, None)
        q = torch.cat(self._q)
        order = sorted(range(len(self._q_keys)), key=self._q_keys.__getitem__)
        return Proposal(self.token_ids, q.index_select(0, torch.tensor(order, device=q.device)))
