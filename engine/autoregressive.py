"""The autoregressive executor: serves a causal LM one step at a time.

    scheduler.schedule -> runner.run (forward, LM head, argmax) -> sampler -> scheduler.update
    -> output processor (append tokens, stop checks, outputs) -> finished requests removed

Fault isolation. A step that raises while running its batch (forward or sampling) is rerun
one request at a time: the requests that fail alone finish with finish_reason "error" and
the message, their blocks are freed, and the others go on as if nothing had happened (KV
writes of the failed attempt are rewritten identically by the rerun; nothing of the step
was committed before sampling succeeded). Detokenization failures are isolated the same way
(engine.output_processor). What fails outside these phases is the Engine's to handle: it
calls `fail_all`, which finishes every request with the error and leaves the executor empty
and usable.
"""
import time

from engine.detokenizer import IncrementalDetokenizer
from engine.kv_cache import BlockManager, num_blocks_for_budget
from engine.output_processor import OutputProcessor, describe
from engine.params import SamplingParams
from engine.profiling import ranged
from engine.request import Request
from engine.runner import ModelRunner
from engine.sampler import Sampler
from engine.scheduler import ScheduledBatch, Scheduler


class AutoregressiveExecutor:
    params_type = SamplingParams
    add_special_tokens = True  # a str prompt is tokenized as HF does for causal LMs

    def __init__(self, loaded, config, ops, extra_kv_bytes_per_block=0):
        model = loaded.model
        dtype = next(model.parameters()).dtype
        self.max_model_len = loaded.max_positions
        num_blocks = num_blocks_for_budget(config, model, dtype, self.max_model_len, extra_kv_bytes_per_block)
        self.block_manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs, config.max_num_batched_tokens)
        self.runner = ModelRunner(model, config, self.block_manager, dtype, self.max_model_len)
        self.eos_token_ids = list(loaded.eos_token_ids)  # one list, read by sampler and output processor
        self.sampler = Sampler(ops, self.eos_token_ids)
        self.output_processor = OutputProcessor(IncrementalDetokenizer(loaded.tokenizer), self.eos_token_ids)
        self.requests: dict[str, Request] = {}

    # ---- requests ------------------------------------------------------------------------

    def check_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """ValueError when the request could never fit the model's context or the cache."""
        prompt_len, max_tokens = len(prompt_token_ids), params.max_tokens
        total = prompt_len + max_tokens
        if total > self.max_model_len:
            raise ValueError(
                f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) = {total} exceeds the "
                f"model's context of {self.max_model_len} positions"
            )
        bm = self.block_manager
        if bm.blocks_for(total) > bm.num_blocks:
            raise ValueError(
                f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) needs {bm.blocks_for(total)} "
                f"KV blocks but the cache has {bm.num_blocks}; raise num_kv_blocks or the memory budget"
            )

    def add(self, request_id, prompt, prompt_token_ids, params, seed, arrival_time) -> None:
        req = Request(request_id, prompt, prompt_token_ids, params, seed, arrival_time)
        self.scheduler.add(req)
        self.requests[request_id] = req

    def abort(self, request_id: str) -> bool:
        req = self.requests.pop(request_id, None)
        if req is None:
            return False
        self.scheduler.remove(req)
        req.finish("abort", time.perf_counter())
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def stats(self) -> dict:
        s, bm = self.scheduler, self.block_manager
        return {"num_running": len(s.running), "num_waiting": len(s.waiting),
                "num_kv_blocks": bm.num_blocks, "num_free_kv_blocks": bm.num_free_blocks,
                "num_preemptions": s.num_preemptions, "num_computed_tokens": s.num_computed_tokens_total}

    # ---- steps -----------------------------------------------------------------------------

    def step(self) -> list:
        with ranged("schedule"):
            batch = self._schedule()
        if not batch:
            return []
        now = time.perf_counter()
        for req in batch.requests:
            if req.metrics.first_scheduled_time is None:
                req.metrics.first_scheduled_time = now
        try:
            sampled = self._run(batch)
        except Exception as error:  # noqa: BLE001 - find the request(s) that caused it
            return self._run_apart(batch, error)
        return self._finish_step(batch, *sampled)

    def _schedule(self) -> ScheduledBatch:
        return self.scheduler.schedule()

    def _run(self, batch: ScheduledBatch):
        logits, greedy = self.runner.run(batch)
        sampling = batch.sampling
        if not sampling:
            return sampling, [], []
        with ranged("sample"):
            return (sampling, *self.sampler(logits, greedy, sampling))

    def _finish_step(self, batch, sampling, tokens, logprobs) -> list:
        self.scheduler.update(batch)
        if not sampling:
            return []
        with ranged("outputs"):
            outputs, finished = self.output_processor.process(sampling, tokens, logprobs, time.perf_counter())
        for req in finished:
            self._remove(req)
        return outputs

    def _run_apart(self, batch: ScheduledBatch, error: Exception) -> list:
        """Rerun each request of a failed step alone; those that fail alone finish with an error."""
        if len(batch) == 1:
            return [self._fail(batch.requests[0], describe(error))]
        outputs = []
        for i in range(len(batch)):
            alone = batch.subset([i])
            try:
                sampled = self._run(alone)
            except Exception as own_error:  # noqa: BLE001
                outputs.append(self._fail(alone.requests[0], describe(own_error)))
                continue
            outputs += self._finish_step(alone, *sampled)
        return outputs

    def _fail(self, req: Request, message: str):
        self._remove(req)
        req.finish("error", time.perf_counter(), message)
        return self.output_processor.output(req)

    def _remove(self, req: Request) -> None:
        self.scheduler.remove(req)
        self.requests.pop(req.request_id, None)

    def fail_all(self, message: str) -> list:
        """Finish every request with `message` and start afresh (an error nobody can be blamed for).

        Every request the executor accepted is failed, also one that an interrupted schedule
        left outside the scheduler's queues, and every block is released."""
        now = time.perf_counter()
        self.scheduler.remove_all()
        outputs = []
        for req in self.requests.values():
            if req.row is not None:  # still holds blocks: it was between the queues
                self.block_manager.free(req)
            req.finish("error", now, message)
            outputs.append(self.output_processor.output(req))
        self.requests.clear()
        return outputs
