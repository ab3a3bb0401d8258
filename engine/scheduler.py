"""Continuous batching of autoregressive requests, first come first served.

Every step the scheduler picks, under `max_num_batched_tokens` and `max_num_seqs`:
1. the running requests in admission order, each with the tokens it has not computed yet
   (one for a decoding request, the rest of its prompt, or a chunk of it, for a prefill);
   when the cache has no room for one, the most recently admitted running request is
   preempted (its blocks freed; it recomputes later);
2. then, if nobody was preempted, waiting requests in arrival order (preempted ones first),
   each with its prompt minus the blocks the prefix cache already holds, chunked to fit.
"""
from collections import deque
from dataclasses import dataclass, field

from engine.kv_cache import BlockManager
from engine.request import Request, RequestStatus


@dataclass
class ScheduledBatch:
    """The requests of one step, in order, and how many new tokens each computes."""

    requests: list[Request] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)

    def add(self, req: Request, n: int):
        self.requests.append(req)
        self.num_new_tokens.append(n)

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

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        preempted = self._schedule_running(batch, budget)
        budget -= sum(batch.num_new_tokens)
        if not preempted:
            self._schedule_waiting(batch, budget)
        return batch

    def _schedule_running(self, batch: ScheduledBatch, budget: int) -> bool:
        bm, preempted, i = self.block_manager, False, 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            while not bm.can_append(req, req.num_computed_tokens + n):
                self._preempt(self.running.pop())
                preempted = True
                if i == len(self.running):  # req itself was the most recent: nothing left to free
                    return preempted
            bm.append_slots(req, req.num_computed_tokens + n)
            batch.add(req, n)
            budget -= n
            i += 1
        return preempted

    def _schedule_waiting(self, batch: ScheduledBatch, budget: int) -> None:
        bm = self.block_manager
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            hits = bm.match_prefix(req)
            cached = len(hits) * bm.block_size
            n = min(req.num_tokens - cached, budget)
            if not bm.can_allocate(hits, cached + n):
                return
            bm.allocate(req, hits, cached + n)
            req.num_computed_tokens = cached
            if not req.was_admitted:  # the prefix hits of the prompt, not of a recompute
                req.metrics.cached_prompt_tokens = cached
                req.was_admitted = True
            self.waiting.popleft()
            self.running.append(req)
            req.status = RequestStatus.RUNNING
            batch.add(req, n)
            budget -= n

    def _preempt(self, req: Request) -> None:
        """Free the request's blocks; it goes back to the front of the queue to recompute."""
        self.block_manager.free(req)
        req.num_computed_tokens = 0
        req.status = RequestStatus.PREEMPTED
        self.waiting.appendleft(req)
        self.num_preemptions += 1

    def update(self, batch: ScheduledBatch) -> None:
        """After the step ran: its tokens are computed; seal the blocks they completed."""
        for req, n in zip(batch.requests, batch.num_new_tokens):
            req.num_computed_tokens += n
            self.num_computed_tokens_total += n
            self.block_manager.seal_computed(req)

    def finish(self, req: Request) -> None:
        """Remove a finished or aborted request, wherever it is, and free its blocks at once."""
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self.block_manager.free(req)
        req.status = RequestStatus.FINISHED
