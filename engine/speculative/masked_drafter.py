"""Drafting with a bidirectional masked LM: k slots filled in a few parallel passes.

Per drafting request the encoder reads `[CLS] context [MASK]*S [SEP]` (the tokenizer's
cls/sep, else bos/eos): context is the request's prompt and accepted tokens without the
causal template's leading bos, cut from the left to fit the model's positions; S is
draft_length (default k). The first k slots are the draft; a request allowed fewer drafts
this step (near max_tokens) proposes only its first ones. All requests of a step are
packed into one encoder forward per pass ("encoder" attention, no cache).

Passes commit slots left to right. The k slots are split into min(draft_passes, k)
contiguous blocks, the first ones larger by one when uneven; pass t predicts the slots of
block t, with every earlier block filled in and the later ones still [MASK], and commits
them. Special tokens are never proposed, except the target's end-of-sequence tokens.

Why left to right and not mask-predict's lowest-confidence re-masking: rejection sampling
is exact only if, given the tokens before it, a draft token is a draw from the q it is
tested with. A slot committed from pass t is a draw from its pass-t distribution given
earlier blocks only, so the rule holds. Re-masking by confidence breaks it: whether a slot
is kept depends on its own draw, and an earlier slot re-predicted after a later one was
kept is conditioned on it, so the later slot's token is no longer distributed as its q
given the earlier ones (the output would drift from the target's distribution). Greedy
verification is exact either way; left to right also accepted more on the bundled models
(docs/speculative.md).
"""
import numpy as np
import torch

from engine.attention import AttentionMetadata
from engine.mask_template import template_ids
from engine.speculative.proposal import ProposalBuilder, pick


def split_slots(k: int, passes: int) -> list[range]:
    """The k slots as min(passes, k) contiguous blocks, the first ones larger when uneven."""
    count = min(passes, k)
    base, extra = divmod(k, count)
    blocks, start = [], 0
    for b in range(count):
        end = start + base + (1 if b < extra else 0)
        blocks.append(range(start, end))
        start = end
    return blocks


class MaskedDrafter:
    def __init__(self, loaded, spec, target_vocab_size: int, target_eos_ids: list[int]):
        tok = loaded.tokenizer
        self.cls_id, self.sep_id, self.mask_id = template_ids(tok, f"the masked draft model {spec.model!r}")
        self.model = loaded.model
        self.device = next(self.model.parameters()).device
        # the causal template's leading bos is not part of the masked LM's context
        self.bos_id = tok.bos_token_id if tok.bos_token_id != self.cls_id else None
        self.length = spec.draft_length or spec.num_speculative_tokens
        self.passes = spec.draft_passes or 1
        self.context_room = self.model.max_positions - self.length - 2
        if self.context_room < 1:
            raise ValueError(f"draft_length ({self.length}) + 2 special tokens leave no room for context in the "
                             f"draft model's {self.model.max_positions} positions")
        self.vocab_size = target_vocab_size
        banned = [i for i in tok.all_special_ids if i not in target_eos_ids and i < loaded.vocab_size]
        self.banned = torch.zeros(loaded.vocab_size, dtype=torch.bool, device=self.device)
        self.banned[banned] = True
        self.banned[target_vocab_size:] = True
        self.last_cost = (0, 0)  # (forwards, tokens) of the last proposal, for the adaptive proposer

    def sequence_length(self, req) -> int:
        return min(len(req.all_token_ids), self.context_room) + self.length + 2

    def cost_plan(self, requests):
        """k -> (forwards, tokens encoded) of drafting k tokens for each of the requests."""
        tokens = sum(map(self.sequence_length, requests))
        return lambda k: (min(self.passes, k), min(self.passes, k) * tokens)

    def _template(self, req) -> np.ndarray:
        ctx = req.all_token_ids
        start = 1 if self.bos_id is not None and ctx and ctx[0] == self.bos_id else 0
        start = max(start, len(ctx) - self.context_room)
        return np.array([self.cls_id, *ctx[start:], *[self.mask_id] * self.length, self.sep_id], dtype=np.int64)

    @torch.inference_mode()
    def propose(self, requests, num_drafts):
        builder = ProposalBuilder(len(requests))
        active = [i for i, k in enumerate(num_drafts) if k > 0]
        sequences = {i: self._template(requests[i]) for i in active}
        blocks = {i: split_slots(num_drafts[i], self.passes) for i in active}
        forwards = tokens = 0
        for t in range(self.passes):
            members = [i for i in active if t < len(blocks[i])]
            if not members:
                break
            packed = [sequences[i] for i in members]
            lengths = np.fromiter(map(len, packed), np.int64, len(packed))
            cu = np.zeros(len(packed) + 1, dtype=np.int64)
            np.cumsum(lengths, out=cu[1:])
            row_requests, slots, rows = [], [], []
            for i, start in zip(members, cu[:-1].tolist()):
                first_slot = start + len(sequences[i]) - 1 - self.length
                for j in blocks[i][t]:
                    row_requests.append(i)
                    slots.append(j)
                    rows.append(first_slot + j)
            hidden = self._encode(np.concatenate(packed), lengths, cu)
            logits = self.model.compute_logits(hidden[torch.tensor(rows, device=self.device)])
            logits = logits.masked_fill(self.banned, float("-inf"))[:, : self.vocab_size]
            reqs = [requests[i] for i in row_requests]
            chosen, q, sampled = pick(logits, reqs, [r.num_generated + j for r, j in zip(reqs, slots)])
            for i, j, token in zip(row_requests, slots, chosen):
                seq = sequences[i]
                seq[len(seq) - 1 - self.length + j] = token
            builder.add(row_requests, slots, chosen, q, sampled)
            forwards, tokens = forwards + 1, tokens + int(cu[-1])
        self.last_cost = (forwards, tokens)
        return builder.build()

    def _encode(self, ids, lengths, cu):
        positions = np.arange(int(cu[-1])) - np.repeat(cu[:-1], lengths)
        device = self.device
        meta = AttentionMetadata("encoder", torch.from_numpy(cu.astype(np.int32)).to(device))
        return self.model(torch.from_numpy(ids).to(device), torch.from_numpy(positions).to(device), meta)

    def release(self, req) -> None:
        """Nothing is kept between steps."""

    def release_all(self) -> None:
        """Nothing is kept between steps."""
