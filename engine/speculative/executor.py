"""The speculative executor: a draft model proposes, the causal target verifies.

One step, beside the autoregressive executor's (engine/autoregressive.py, whose request
handling, fault isolation and output processing it keeps):

    proposer: k for this step -> scheduler.schedule(lookahead=k): cache slots for up to k
    drafts per sampling request -> drafter.propose (masked or causal draft model, batched
    over the drafting requests) -> runner.run: one target forward over the known and draft
    tokens, logits at drafts + 1 rows per sampling request -> verifier: accepted drafts and
    the target's own token per request -> output processor, token by token (stop tokens,
    stop strings, max_tokens exactly as without speculation) -> scheduler.update_accepted:
    num_computed_tokens counts the accepted tokens only, the blocks of rejected drafts are
    released, full blocks of accepted tokens sealed for the prefix cache.

Requests that do not sample this step (prefill chunks) and requests without room for
drafts run as in plain autoregressive decoding, in the same forward. A step with k = 0 is
a plain autoregressive step.
"""
import time

from engine.autoregressive import AutoregressiveExecutor
from engine.models.loader import load_model
from engine.profiling import ranged
from engine.scheduler import ScheduledBatch
from engine.speculative.causal_drafter import CausalDrafter
from engine.speculative.masked_drafter import MaskedDrafter
from engine.speculative.metrics import SpeculativeMetrics
from engine.speculative.proposer import Proposer, step_features
from engine.speculative.verifier import Verifier


class SpeculativeExecutor(AutoregressiveExecutor):
    def __init__(self, loaded, config, ops):
        spec = config.speculative_config
        draft = load_model(spec.model, config.dtype, config.device, config.kernel_backend, config.allow_pickle)
        causal = draft.kind == "causal"
        extra = CausalDrafter.bytes_per_block(draft, config) if causal else 0
        super().__init__(loaded, config, ops, extra_kv_bytes_per_block=extra)
        if causal:
            self.drafter = CausalDrafter(draft, config, self.block_manager.num_blocks, loaded.vocab_size)
        else:
            self.drafter = MaskedDrafter(draft, spec, loaded.vocab_size, self.eos_token_ids)
        self.draft_kind = draft.kind
        self.verifier = Verifier(self.sampler)
        self.proposer = Proposer(spec, self.drafter)
        self.totals = SpeculativeMetrics()
        self._step_start = 0.0

    # ---- requests --------------------------------------------------------------------------

    def abort(self, request_id: str) -> bool:
        req = self.requests.get(request_id)
        if req is not None:
            self.drafter.release(req)
        return super().abort(request_id)

    def _remove(self, req) -> None:
        super()._remove(req)
        self.drafter.release(req)

    def fail_all(self, message: str) -> list:
        self.drafter.release_all()
        return super().fail_all(message)

    def stats(self) -> dict:
        """The autoregressive counters plus "speculative": the engine's SpeculativeMetrics as a dict."""
        return {**super().stats(), "speculative": self.totals.as_dict()}

    # ---- steps -------------------------------------------------------------------------------

    def _schedule(self) -> ScheduledBatch:
        self._step_start = time.perf_counter()  # the adaptive proposer models whole steps
        return self.scheduler.schedule(lookahead=self.proposer.choose(self._upcoming))

    def _upcoming(self) -> list:
        """The requests this step will likely run: the running ones, then waiting ones up to max_num_seqs."""
        s = self.scheduler
        room = max(0, s.max_num_seqs - len(s.running))
        return s.running + [req for _, req in zip(range(room), s.waiting)]

    def _run(self, batch: ScheduledBatch):
        with ranged("draft"):
            drafts = self._draft(batch)
        if batch.spec_token_ids is None:  # nothing drafted: exactly a plain autoregressive step
            sampling, tokens, logprobs = super()._run(batch)
            return sampling, None, (tokens, logprobs)
        logits, greedy = self.runner.run(batch)
        sampling = batch.sampling
        if not sampling:
            return sampling, [], None
        sampling_drafts = [d for d, s in zip(drafts.token_ids, batch.samples) if s]
        with ranged("verify"):
            verdict = self.verifier(logits, greedy, sampling, sampling_drafts, drafts.probs)
        return sampling, sampling_drafts, verdict

    def _draft(self, batch: ScheduledBatch):
        """Draft for the requests with lookahead; their tokens go into batch.spec_token_ids."""
        drafting = [i for i, n in enumerate(batch.lookahead) if n]
        proposal = self.drafter.propose([batch.requests[i] for i in drafting], [batch.lookahead[i] for i in drafting])
        per_request = [[] for _ in range(len(batch))]
        for i, tokens in zip(drafting, proposal.token_ids):
            per_request[i] = tokens
        batch.spec_token_ids = per_request if any(per_request) else None
        proposal.token_ids = per_request
        return proposal

    def _finish_step(self, batch, sampling, drafts, verdict) -> list:
        """Commit a step; `drafts` None marks a plain one, whose `verdict` is (tokens, logprobs)."""
        if drafts is None:
            outputs = super()._finish_step(batch, sampling, *verdict)
            self.proposer.observe(step_features(sum(batch.num_new_tokens), 0, 0),
                                  time.perf_counter() - self._step_start, [])
            return outputs
        outputs = []
        if sampling:
            for req, d, accepted in zip(sampling, drafts, verdict.num_accepted):
                self._record(req, len(d), accepted)
            with ranged("outputs"):
                outputs = self._emit(sampling, verdict, time.perf_counter())
        accepted = iter(verdict.num_accepted if sampling else ())
        self.scheduler.update_accepted(batch, [next(accepted) if s else 0 for s in batch.samples])
        features = step_features(sum(batch.num_new_tokens) + sum(map(len, batch.spec_token_ids)),
                                 *self.drafter.last_cost)
        self.proposer.observe(features, time.perf_counter() - self._step_start,
                              [(len(d), a) for d, a in zip(drafts, verdict.num_accepted)] if sampling else [])
        return outputs

    def _record(self, req, drafted: int, accepted: int) -> None:
        if not drafted:
            return
        if req.metrics.speculative is None:
            req.metrics.speculative = SpeculativeMetrics()
        req.metrics.speculative.record(drafted, accepted)
        self.totals.record(drafted, accepted)

    def _emit(self, sampling, verdict, now) -> list:
        """Append each request's emitted tokens in order, through the output processor one
        token per request at a time, so that a stop ends it exactly where it would without
        speculation; the later tokens of a finished request are dropped."""
        processor = self.output_processor
        latest, live, r = {}, list(range(len(sampling))), 0
        while live:
            outputs, finished = processor.process([sampling[i] for i in live], [verdict.tokens[i][r] for i in live],
                                                  [verdict.logprobs[i][r] for i in live], now)
            latest.update((out.request_id, out) for out in outputs)
            for req in finished:
                self._remove(req)
            r += 1
            live = [i for i in live if r < len(verdict.tokens[i]) and not sampling[i].is_finished]
        return [latest[req.request_id] for req in sampling if req.request_id in latest]
