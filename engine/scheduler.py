"""Continuous batching of autoregressive requests, first come first served.

Every step the scheduler picks, under `max_num_batched_tokens` and `max_num_seqs`:
1. the running requests in admission order, each with the tokens it has not computed yet
   (one for a decoding request, the rest of its prompt, or a chunk of it, for a prefill);
   when the cache has no room for one, the most recently admitted running request is
   preempted (its blocks freed; it recomputes later);
2. then, if nobody was preempted, waiting requests in arrival order (preempted ones first),
   each with its prompt minus the blocks the prefix cache already holds, chunked to fit.
A request samples a token at the end of the step when the step computes its last known
token; the batch records that decision once, for the runner and the sampler alike.

Under async scheduling (engine/async_executor.py) a request may hold a placeholder for the
token the step in flight samples: it is scheduled for its next token as if that token were
known, except when it already has max_tokens (its last step is in flight). A request
preempted in a schedule still holds its placeholder, but waiting requests are only admitted
by a schedule without preemptions, and by the next one the placeholder is resolved.

Speculative decoding asks `schedule(lookahead=k)`: a request that samples also gets cache
slots (and budget) for up to k draft tokens after its known ones, never beyond its
max_tokens. Drafts are optional: when the cache is short a request first gives up its
lookahead, and only a request whose own tokens do not fit preempts another. After the
step `update_accepted` counts the accepted drafts as computed and releases the slots of
the rejected ones.
"""
from collections import deque
from dataclasses import dataclass, field

from engine.kv_cache import BlockManager
from engine.request import Request


@dataclass
class ScheduledBatch:
    """The requests of one step, in order: how many new tokens each computes from which
    position, and which of them sample (those whose last known token is in the step)."""

    requests: list[Request] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # num_computed_tokens when scheduled
    samples: list[bool] = field(default_factory=list)
    lookahead: list[int] = field(default_factory=list)  # cache slots reserved for draft tokens
    # Speculation: the draft tokens each request computes after its new tokens (at most its
    # lookahead), set before the step runs; None when no request has any.
    spec_token_ids: list[list[int]] | None = None

    def add(self, req: Request, n: int, lookahead: int = 0):
        start = req.num_computed_tokens
        self.requests.append(req)
        self.num_new_tokens.append(n)
        self.starts.append(start)
        self.samples.append(start + n == req.num_tokens)
        self.lookahead.append(lookahead)

    @property
    def sampling(self) -> list[Request]:
        return [req for req, s in zip(self.requests, self.samples) if s]

    @property
    def is_decode(self) -> bool:
        """One new token per sequence, each continuing a cached context."""
        return len(self.requests) == sum(self.num_new_tokens) and all(self.starts) and self.spec_token_ids is None

    def subset(self, indices) -> "ScheduledBatch":
        """The same step restricted to the requests at `indices` (to rerun them apart)."""
        sub = ScheduledBatch()
        for i in indices:
            sub.requests.append(self.requests[i])
            sub.num_new_tokens.append(self.num_new_tokens[i])
            sub.starts.append(self.starts[i])
            sub.samples.append(self.samples[i])
            sub.lookahead.append(self.lookahead[i])
        return sub

    def __len__(self):
        return len(self.requests)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # admission order
        self.num_preemptions = 0
        self.num_computed_tokens_total = 0  # tokens run through the model, for stats and tests

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self, lookahead: int = 0) -> ScheduledBatch:
        """The next step; with `lookahead`, room for that many draft tokens per sampling request."""
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        preempted = self._schedule_running(batch, budget, lookahead)
        budget -= sum(batch.num_new_tokens) + sum(batch.lookahead)
        if not preempted:
            self._schedule_waiting(batch, budget, lookahead)
        return batch

    @staticmethod
    def _lookahead(req: Request, start: int, n: int, budget: int, lookahead: int) -> int:
        """Draft slots for a request computing n tokens from `start`: only when it samples,
        within the budget, and never past its max_tokens (the step emits at most 1 + drafts)."""
        if not lookahead or start + n != req.num_tokens:
            return 0
        return max(0, min(lookahead, budget - n, req.params.max_tokens - req.num_generated - 1))

    def _schedule_running(self, batch: ScheduledBatch, budget: int, lookahead: int) -> bool:
        bm, preempted, i = self.block_manager, False, 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            if req.num_generated >= req.params.max_tokens:  # its last token is still in flight
                i += 1
                continue
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            extra = self._lookahead(req, req.num_computed_tokens, n, budget, lookahead)
            while not bm.can_append(req, req.num_computed_tokens + n + extra):
                if extra:  # drafts never cost another request its place
                    extra = 0
                    continue
                self._preempt(self.running.pop())
                preempted = True
                if i == len(self.running):  # req itself was the most recent: nothing left to free
                    return preempted
            bm.append_slots(req, req.num_computed_tokens + n + extra)
            batch.add(req, n, extra)
            budget -= n + extra
            i += 1
        return preempted

    def _schedule_waiting(self, batch: ScheduledBatch, budget: int, lookahead: int) -> None:
        bm = self.block_manager
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            hits = bm.match_prefix(req)
            cached = len(hits) * bm.block_size
            n = min(req.num_tokens - cached, budget)
            extra = self._lookahead(req, cached, n, budget, lookahead)
            if extra and not bm.can_allocate(hits, cached + n + extra):
                extra = 0
            if not bm.can_allocate(hits, cached + n + extra):
                return
            bm.allocate(req, hits, cached + n + extra)
            req.admit(cached)
            self.waiting.popleft()
            self.running.append(req)
            batch.add(req, n, extra)
            budget -= n + extra

    def _preempt(self, req: Request) -> None:
        """Free the request's blocks; it goes back to the front of the queue to recompute."""
        self.block_manager.free(req)
        req.preempt()
        self.waiting.appendleft(req)
        self.num_preemptions += 1

    def update(self, batch: ScheduledBatch) -> None:
        """After the step ran: its tokens are computed; seal the blocks they completed. A
        request that finished meanwhile (async scheduling) keeps nothing."""
        for req, n in zip(batch.requests, batch.num_new_tokens):
            self.num_computed_tokens_total += n
            if req.is_finished:
                continue
            req.num_computed_tokens += n
            self.block_manager.seal_computed(req)

    def update_accepted(self, batch: ScheduledBatch, num_accepted: list[int]) -> None:
        """After a speculative step whose emitted tokens were appended: each unfinished
        request's new tokens and its `num_accepted` drafts are computed; the blocks past what
        its tokens need (holding rejected drafts only) are released, full ones sealed."""
        bm = self.block_manager
        for req, n, accepted, drafts in zip(batch.requests, batch.num_new_tokens, num_accepted,
                                            batch.spec_token_ids or [()] * len(batch)):
            self.num_computed_tokens_total += n + len(drafts)
            if req.is_finished:
                continue
            req.num_computed_tokens += n + accepted
            bm.rollback(req, req.num_tokens)
            bm.seal_computed(req)

    def remove(self, req: Request) -> None:
        """Take a finished or aborted request out, wherever it is, and free its blocks at once."""
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self.block_manager.free(req)

    def remove_all(self) -> list[Request]:
        """Take every request out (the executor resets after an error it cannot attribute)."""
        reqs = [*self.running, *self.waiting]
        for req in reqs:
            self.block_manager.free(req)
        self.running, self.waiting = [], deque()
        return reqs
