"""Mask-predict: iterative parallel refinement of masked slots with a bidirectional encoder.

A request of target length N is the sequence `[CLS] prompt [MASK]*N [SEP]` (the
tokenizer's cls/sep tokens, falling back to bos/eos; `<s> prompt <mask>*N </s>` for
RoBERTa). Each pass runs the encoder over the whole sequence and, at the slots to predict,
takes the prediction and its probability (the confidence). The vocabulary excludes the
tokenizer's special tokens except `tokenizer.eos_token_id` when that is not None: a BERT
tokenizer defines no eos token, so it never produces [SEP] (or [CLS], [MASK], [PAD], [UNK])
and its text is all N slots; RoBERTa may produce </s>, and text stops before the first one.

Per pass of a block with T passes (engine/mask_schedule.py has n(t), blocks and seeds):
  low_confidence  every masked slot of the block takes its prediction; then, unless the
                  block is done, its n(t) lowest-confidence slots are re-masked;
  random          the same, re-masking n(t) slots chosen by the seeded hash rule;
  commit          only the most confident masked slots are filled, as many as leave n(t)
                  masked; a filled slot is final (LLaDA);
  threshold tau   (overrides remask and iterations) every masked slot of the block with
                  confidence >= tau is filled, at least the most confident one; filled
                  slots are final; the block takes as many passes as it needs (<= its size).
A scheduled block always runs its T passes, as the paper's loop does: when n(t) reaches 0
before the last pass, the remaining passes find nothing masked and change nothing (they
skip the encoder but count in nfe). Without block_size the N slots are one block. With it,
later blocks stay masked and are not predicted until their turn. stop_early: when a pass's predictions over its block (kept tokens
plus new predictions) equal the previous pass's in the same block, the block takes them and
is done (without blocks: the request is done).

Sampling (temperature > 0) draws with ops.sample, seed mix_seed(seed, SAMPLE_STREAM, pass,
slot); the confidence is the drawn token's probability under the model (softmax of the
restricted logits, untempered), as at temperature 0. A request's seed is params.seed, or
one drawn from the engine seed's generator.

length_candidates: each length is decoded as its own sequence in the same passes; every pass
computes the head at all N slots of these sequences, and when one is done its score is the
mean over its N final tokens of the log-softmax (restricted vocabulary) of its last pass.
The best score wins, the first listed on ties; the metrics and text are that sequence's.

Metrics: nfe = passes run; tokens_per_pass[i] = slots masked before pass i minus after it
(sums to N); pass_texts = the text after each pass, masked slots shown as the mask token.
"""
import time
from collections import deque
from dataclasses import dataclass, replace

import torch

from engine.attention import AttentionMetadata
from engine.detokenizer import batch_decode
from engine.mask_schedule import (
    SAMPLE_STREAM, masked_after, most_confident, lowest_confidence, num_blocks,
    random_slots, split_blocks,
)
from engine.output_processor import describe
from engine.outputs import RequestMetrics, RequestOutput
from engine.params import MaskPredictParams
from engine.profiling import ranged
from engine.seeding import mix_seed


class SequenceRefinement:
    """The state of one target sequence (one length candidate) between passes."""

    def __init__(self, params: MaskPredictParams, length: int, seed: int, mask_id: int):
        self.params, self.length, self.seed, self.mask_id = params, length, seed, mask_id
        self.tokens = [mask_id] * length
        self.confidence = [0.0] * length
        self.masked = [True] * length
        self.blocks = split_blocks(length, params.block_size, params.iterations)
        self.block_index = 0
        self.block_pass = 0  # passes run in the current block
        self.passes_run = 0
        self.previous_view = None  # the block's predictions at the previous pass (stop_early)
        self.tokens_per_pass: list[int] = []
        self.score: float | None = None

    @property
    def finished(self) -> bool:
        return self.block_index == len(self.blocks)

    def slots_to_predict(self) -> list[int]:
        block = self.blocks[self.block_index]
        return [s for s in range(block.start, block.end) if self.masked[s]]

    def apply(self, slots, tokens, confidences):
        """Take one pass's predictions at `slots` (those of slots_to_predict) and re-mask."""
        p, block = self.params, self.blocks[self.block_index]
        masked_before = sum(self.masked)
        view = list(self.tokens)
        for s, token, conf in zip(slots, tokens, confidences):
            view[s], self.confidence[s] = token, conf
        block_view = view[block.start : block.end]
        converged = p.stop_early and block_view == self.previous_view
        self.previous_view = block_view

        remask = 0
        if converged:
            fill = slots
        elif p.threshold is not None:
            fill = [s for s in slots if self.confidence[s] >= p.threshold]
            fill = fill or most_confident(slots, self.confidence, 1)
        else:
            remask = masked_after(block.end - block.start, self.block_pass, block.passes, p.schedule)
            if p.remask == "commit":
                fill, remask = most_confident(slots, self.confidence, len(slots) - remask), 0
            else:
                fill = slots
        for s in fill:
            self.tokens[s], self.masked[s] = view[s], False
        if remask:
            scope = range(block.start, block.end)
            if p.remask == "random":
                chosen = random_slots(scope, self.seed, self.passes_run, remask)
            else:
                chosen = lowest_confidence(scope, self.confidence, remask)
            for s in chosen:
                self.tokens[s], self.masked[s] = self.mask_id, True

        self.passes_run += 1
        self.block_pass += 1
        self.tokens_per_pass.append(masked_before - sum(self.masked))
        # a scheduled block runs all its passes (some may find nothing masked, as in the
        # paper's loop); a threshold block, or a converged one, ends when it is filled
        scheduled = p.threshold is None and not converged
        if not any(self.masked[block.start : block.end]) and not (scheduled and self.block_pass < block.passes):
            self.block_index, self.block_pass, self.previous_view = self.block_index + 1, 0, None


@dataclass
class _Request:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: MaskPredictParams
    seed: int
    sequences: list[SequenceRefinement]
    metrics: RequestMetrics
    pass_texts: list[list[str]]  # per sequence

    @property
    def finished(self) -> bool:
        return all(seq.finished for seq in self.sequences)

    def shown(self) -> int:
        """Which sequence the outputs show: the best-scoring once done, else the first."""
        if not self.finished:
            return 0
        scores = [seq.score for seq in self.sequences]
        return scores.index(max(scores)) if len(scores) > 1 else 0


class MaskPredictExecutor:
    """Runs mask-predict requests with iteration-level batching: one encoder pass per step()
    over every admitted request; new requests join at the next pass, finished ones leave."""

    def __init__(self, loaded, config, ops):
        tok = loaded.tokenizer
        if tok is None:
            raise ValueError("mask-predict needs the checkpoint's tokenizer (for its mask/cls/sep ids)")
        self.model, self.tokenizer, self.ops, self.config = loaded.model, tok, ops, config
        self.mask_id = tok.mask_token_id
        self.cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        self.sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        for name, value in (("mask", self.mask_id), ("cls (or bos)", self.cls_id), ("sep (or eos)", self.sep_id)):
            if value is None:
                raise ValueError(f"the tokenizer defines no {name} token, which mask-predict's template needs")
        self.eos_id = tok.eos_token_id
        self.vocab_size = loaded.vocab_size
        self.max_positions = self.model.max_positions
        self.device = next(self.model.parameters()).device
        banned = [i for i in tok.all_special_ids if i != self.eos_id and i < self.vocab_size]
        self.banned = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
        self.banned[banned] = True
        self.waiting: deque[_Request] = deque()
        self.running: list[_Request] = []

    params_type = MaskPredictParams
    add_special_tokens = False  # the executor frames the prompt with its own template

    # ---- requests -------------------------------------------------------------------------

    def check_request(self, prompt_token_ids, params) -> None:
        """ValueError when the request could never fit the model's positions or one pass."""
        n = len(prompt_token_ids)
        for length in params.lengths:
            total = n + length + 2
            if total > self.max_positions:
                raise ValueError(
                    f"prompt ({n} tokens) + length {length} + 2 special tokens = {total} "
                    f"exceeds the model's max positions ({self.max_positions})"
                )
            blocks = num_blocks(length, params.block_size)
            if params.threshold is None and params.iterations < blocks:
                raise ValueError(
                    f"iterations ({params.iterations}) must be >= the number of blocks ({blocks}) "
                    f"of length {length} in blocks of block_size {params.block_size}"
                )
        need = sum(n + length + 2 for length in params.lengths)
        if need > self.config.max_num_batched_tokens:
            raise ValueError(
                f"the request needs {need} tokens per pass, more than max_num_batched_tokens "
                f"({self.config.max_num_batched_tokens})"
            )
        if len(params.lengths) > self.config.max_num_seqs:
            raise ValueError(
                f"length_candidates ({len(params.lengths)}) exceed max_num_seqs ({self.config.max_num_seqs})"
            )

    def add(self, request_id, prompt, prompt_token_ids, params, seed, arrival_time) -> None:
        self.waiting.append(_Request(
            request_id, prompt, list(prompt_token_ids), params, seed,
            [SequenceRefinement(params, n, seed, self.mask_id) for n in params.lengths],
            RequestMetrics(arrival_time=arrival_time, prompt_tokens=len(prompt_token_ids)),
            [[] for _ in params.lengths],
        ))

    def abort(self, request_id) -> bool:
        for queue in (self.waiting, self.running):
            for r in queue:
                if r.request_id == request_id:
                    queue.remove(r)
                    return True
        return False

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def stats(self) -> dict:
        """Mask-predict keeps no KV cache: its block counters are 0."""
        return {"num_running": len(self.running), "num_waiting": len(self.waiting), "num_kv_blocks": 0,
                "num_free_kv_blocks": 0, "num_preemptions": 0}

    def fail_all(self, message: str) -> list[RequestOutput]:
        """Finish every request with `message` and start afresh."""
        requests = [*self.running, *self.waiting]
        self.running, self.waiting = [], deque()
        return [self._failed(r, message) for r in requests]

    def _failed(self, request, message) -> RequestOutput:
        request.metrics.finished_time = time.perf_counter()
        seq = request.sequences[0]
        return RequestOutput(request.request_id, request.prompt, list(request.prompt_token_ids),
                             list(seq.tokens), "", finished=True, finish_reason="error",
                             metrics=request.metrics, error=message)

    # ---- one pass -------------------------------------------------------------------------

    def _sequence_tokens(self, request, seq):
        return len(request.prompt_token_ids) + seq.length + 2

    def _admit(self):
        """FCFS: the oldest waiting requests join while the pass stays within the budgets."""
        live = [(r, s) for r in self.running for s in r.sequences if not s.finished]
        tokens = sum(self._sequence_tokens(r, s) for r, s in live)
        count = len(live)
        while self.waiting:
            request = self.waiting[0]
            need = sum(self._sequence_tokens(request, s) for s in request.sequences)
            if tokens + need > self.config.max_num_batched_tokens or count + len(request.sequences) > self.config.max_num_seqs:
                break
            self.waiting.popleft()
            request.metrics.first_scheduled_time = time.perf_counter()
            self.running.append(request)
            tokens, count = tokens + need, count + len(request.sequences)

    def step(self) -> list[RequestOutput]:
        """Run one encoder pass over the admitted requests; an output for each of them.

        If the pass raises, each request runs its pass alone; one that fails alone finishes
        with finish_reason "error" and the others go on (nothing changes before a pass's
        predictions are all computed)."""
        with ranged("schedule"):
            self._admit()
        if not self.running:
            return []
        try:
            return self._pass(list(self.running))
        except Exception:  # noqa: BLE001 - find the request(s) that caused it
            outputs = []
            for request in list(self.running):
                try:
                    outputs += self._pass([request])
                except Exception as error:  # noqa: BLE001
                    self.running.remove(request)
                    outputs.append(self._failed(request, describe(error)))
            return outputs

    def _pass(self, requests) -> list[RequestOutput]:
        live = [(r, s) for r in requests for s in r.sequences if not s.finished]
        # a sequence with nothing masked in its block (more passes than slots to fill) takes a
        # no-op pass without the encoder, unless its last pass's scores are needed
        packed = [(r, s) for r, s in live if s.slots_to_predict() or len(r.sequences) > 1]
        ids, positions, bounds, rows, plans = [], [], [0], [], {}
        for request, seq in packed:
            start = bounds[-1]
            sequence = [self.cls_id, *request.prompt_token_ids, *seq.tokens, self.sep_id]
            ids += sequence
            positions += range(len(sequence))
            bounds.append(start + len(sequence))
            first_slot = start + 1 + len(request.prompt_token_ids)
            predict = seq.slots_to_predict()
            offset = len(rows)
            if len(request.sequences) > 1:  # scored: the head runs at every slot
                rows += [first_slot + s for s in range(seq.length)]
                plans[id(seq)] = (offset, predict, [offset + s for s in predict])
            else:
                rows += [first_slot + s for s in predict]
                plans[id(seq)] = (offset, predict, list(range(offset, offset + len(predict))))

        tokens = confidence = logits = []
        if packed:
            with torch.no_grad():
                with ranged("forward"):
                    logits = self._head_logits(self._encode(ids, positions, bounds), rows)
                with ranged("predict"):
                    tokens, confidence = (t.tolist() for t in self._predict(logits, packed, plans))

        now = time.perf_counter()
        with ranged("remask"):
            for request, seq in live:
                offset, predict, predict_rows = plans.get(id(seq), (0, [], []))
                seq.apply(predict, [tokens[i] for i in predict_rows], [confidence[i] for i in predict_rows])
                if seq.finished and len(request.sequences) > 1:
                    seq.score = self._mean_log_prob(logits[offset : offset + seq.length], seq.tokens)
                if request.params.return_pass_texts:
                    request.pass_texts[request.sequences.index(seq)] += self._render([seq.tokens])
        with ranged("detokenize"):
            texts = self._render([r.sequences[r.shown()].tokens for r in requests])
        outputs = []
        for request, text in zip(requests, texts):
            if request.metrics.first_token_time is None:
                request.metrics.first_token_time = now
            if request.finished:
                request.metrics.finished_time = now
                self.running.remove(request)
            outputs.append(self._output(request, text))
        return outputs

    def _encode(self, ids, positions, bounds):
        device = self.device
        meta = AttentionMetadata("encoder", torch.tensor(bounds, dtype=torch.int32, device=device))
        return self.model(torch.tensor(ids, device=device), torch.tensor(positions, device=device), meta)

    def _head_logits(self, hidden, rows):
        """The MLM head at `rows` only; special tokens (but eos) can never be predicted."""
        logits = self.model.compute_logits(hidden[torch.tensor(rows, device=self.device)])
        return logits.masked_fill(self.banned, float("-inf"))

    def _predict(self, logits, packed, plans):
        """Per head row: the prediction and its confidence (argmax, or a seeded draw)."""
        tokens, confidence = self.ops.confidence_argmax(logits)
        temperature, top_k, top_p, seeds, sampled = [], [], [], [], []
        for request, seq in packed:
            _, predict, predict_rows = plans[id(seq)]
            p = request.params
            if p.temperature > 0:
                for slot, row in zip(predict, predict_rows):
                    sampled.append(row)
                    temperature.append(p.temperature)
                    top_k.append(p.top_k)
                    top_p.append(p.top_p)
                    seeds.append(mix_seed(request.seed, SAMPLE_STREAM, seq.passes_run, slot))
        if sampled:
            device = logits.device
            index = torch.tensor(sampled, device=device)
            drawn = self.ops.sample(
                logits[index],
                torch.tensor(temperature, dtype=torch.float32, device=device),
                torch.tensor(top_k, dtype=torch.int64, device=device),
                torch.tensor(top_p, dtype=torch.float32, device=device),
                torch.tensor(seeds, dtype=torch.int64, device=device),
            )
            probs = torch.softmax(logits[index].float(), dim=-1).gather(1, drawn[:, None])[:, 0]
            tokens[index], confidence[index] = drawn, probs
        return tokens, confidence

    @staticmethod
    def _mean_log_prob(logits, tokens):
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        picked = log_probs.gather(1, torch.tensor(tokens, device=logits.device)[:, None])
        return picked.mean().item()

    def _render(self, sequences):
        """The texts of target slots, in one batched decode: each up to its first
        end-of-sequence token, masks shown."""
        cut = [seq[: seq.index(self.eos_id)] if self.eos_id in seq else seq for seq in sequences]
        return batch_decode(self.tokenizer, cut, skip_special_tokens=False)

    def _output(self, request, text) -> RequestOutput:
        index = request.shown()
        seq = request.sequences[index]
        metrics = replace(
            request.metrics,
            nfe=seq.passes_run,
            tokens_per_pass=list(seq.tokens_per_pass),
            pass_texts=list(request.pass_texts[index]) if request.params.return_pass_texts else None,
            generated_tokens=seq.length,
        )
        return RequestOutput(
            request_id=request.request_id,
            prompt=request.prompt,
            prompt_token_ids=list(request.prompt_token_ids),
            token_ids=list(seq.tokens),
            text=text,
            finished=request.finished,
            finish_reason="length" if request.finished else None,
            metrics=metrics,
        )
