"""Async scheduling: the host schedules and prepares step n+1 while the device runs step n.

The autoregressive executor waits for each step's sampled tokens before it schedules the
next one, so on a GPU the device idles while the host schedules, builds the inputs and
processes outputs. This executor keeps one step in flight instead. One `step()` call:

  1. schedules step n+1. A request sampled at step n holds a placeholder for that token
     (Request.append_placeholder), so it is scheduled for its next token already;
  2. launches step n+1: the runner reads each placeholder's token on the device, from
     step n's sampled tokens, and the sampled tokens of step n+1 start their copy to pinned
     host memory without waiting;
  3. waits for step n's tokens (the only blocking copy of a step) and processes them as the
     synchronous executor does: append, stop checks, outputs;
  4. marks step n+1's tokens computed and gives its sampling requests their placeholders.
Outputs therefore come one step after the synchronous executor's, and they are the same
outputs: seeds and the min_tokens ban count the placeholder as the generated token it is.

A request that stops at step n (end-of-sequence, stop token or string) has also run in step
n+1; that token is dropped. A request whose max_tokens is reached is never scheduled past
it. The blocks of a request that finishes are freed while step n+1 may still write its
keys: every later step runs after it on the same stream, so whoever gets the blocks next
overwrites them later. If launching step n+1 raises, step n is processed first, then step
n+1 reruns request by request as in the synchronous executor (its placeholders are known
tokens by then). Speculative decoding and tensor parallelism run synchronously.
"""
import time
from dataclasses import dataclass

import torch

from engine.autoregressive import AutoregressiveExecutor
from engine.profiling import ranged
from engine.request import Request
from engine.scheduler import ScheduledBatch


@dataclass
class _InFlight:
    """A launched step whose sampled tokens the host has not read yet."""

    sampling: list[Request]  # the requests that sample, in the order of `tokens`
    tokens: torch.Tensor  # int64 [len(sampling)] on the device
    host_tokens: torch.Tensor  # their copy in (pinned) host memory, complete after `ready`
    ready: torch.cuda.Event | None  # None on CPU, where the copy is done when it returns
    logits: torch.Tensor | None  # the sampled rows' logits, kept only when a request wants logprobs


class AsyncAutoregressiveExecutor(AutoregressiveExecutor):
    def __init__(self, loaded, config, ops):
        super().__init__(loaded, config, ops)
        # Every unfinished request of the step in flight is still the scheduler's, so
        # has_unfinished() is the synchronous executor's.
        self.in_flight: _InFlight | None = None

    def step(self) -> list:
        with ranged("schedule"):
            batch = self._schedule()
        previous, self.in_flight = self.in_flight, None
        if not batch:
            return self._complete(previous)
        now = time.perf_counter()
        for req in batch.requests:
            if req.metrics.first_scheduled_time is None:
                req.metrics.first_scheduled_time = now
        try:
            launched = self._launch(batch, previous)
        except Exception as error:  # noqa: BLE001 - step n is sound: finish it, then find the culprit
            outputs = self._complete(previous)
            live = [i for i, req in enumerate(batch.requests) if not req.is_finished]
            outputs += self._run_apart(batch.subset(live), error) if live else []
            # one output per request and step: a request's later output includes the earlier
            return list({out.request_id: out for out in outputs}.values())
        outputs = self._complete(previous)
        self.scheduler.update(batch)
        for index, req in enumerate(launched.sampling):
            if not req.is_finished:
                req.append_placeholder(index)
        self.in_flight = launched
        return outputs

    def _launch(self, batch: ScheduledBatch, previous: _InFlight | None) -> _InFlight:
        """Forward and sampling of `batch` queued on the device; nothing waits for them."""
        logits, greedy = self.runner.run(batch, None if previous is None else previous.tokens)
        sampling = batch.sampling
        if not sampling:
            empty = torch.empty(0, dtype=torch.int64)
            return _InFlight([], empty, empty, None, None)
        with ranged("sample"):
            tokens = self.sampler.sample_on_device(logits, greedy, sampling)
        wants_logprobs = any(req.logprobs is not None for req in sampling)
        if tokens.is_cuda:
            host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
            host.copy_(tokens, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        else:
            host, ready = tokens, None
        # CUDA-graph outputs are static buffers that the next replay overwrites: keep a copy
        return _InFlight(sampling, tokens, host, ready, logits.clone() if wants_logprobs else None)

    def _complete(self, step: _InFlight | None) -> list:
        """Wait for `step`'s tokens and process them: the outputs of its live requests."""
        if step is None or not step.sampling:
            return []
        if step.ready is not None:
            step.ready.synchronize()
        tokens = step.host_tokens.tolist()
        live = [i for i, req in enumerate(step.sampling) if not req.is_finished]  # not aborted or failed
        requests = [step.sampling[i] for i in live]
        tokens = [tokens[i] for i in live]
        for req in requests:
            req.drop_placeholder()
        logprobs = [None] * len(requests)
        if step.logits is not None and any(req.logprobs is not None for req in requests):
            logprobs = self.sampler.logprobs(step.logits[live], requests, tokens)
        with ranged("outputs"):
            outputs, finished = self.output_processor.process(requests, tokens, logprobs, time.perf_counter())
        for req in finished:
            self._remove(req)
        return outputs

    def fail_all(self, message: str) -> list:
        self.in_flight = None
        for req in self.requests.values():
            req.drop_placeholder()
        return super().fail_all(message)
