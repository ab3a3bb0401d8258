"""Mask-predict: iterative parallel refinement of masked slots with a bidirectional encoder.

A request of target length N is the sequence `[CLS] prompt [MASK]*N [SEP]` (the
tokenizer's cls/sep tokens, falling back to bos/eos; `<s> prompt <mask>*N </s>` for
RoBERTa). Each pass runs the encoder over the whole sequence and, at the slots to predict,
takes the prediction and its probability (the confidence): at temperature 0 the argmax
(lowest token id on ties) and its softmax probability. The vocabulary excludes the
tokenizer's special tokens except `tokenizer.eos_token_id` when that is not None (their
logits are -inf): a BERT tokenizer defines no eos token, so it never produces [SEP] (or
[CLS], [MASK], [PAD], [UNK]) and its text is all N slots; RoBERTa may produce </s>, and
text stops before the first one (token_ids keep all N slots).

Per pass of a block with T passes, n(t) slots of the block stay masked after pass t
(engine/mask_schedule.py: the linear or cosine schedule, blocks, seed streams;
engine/mask_rules.py: the rules as tensor functions, in the table REMASK_RULES):
  low_confidence  every masked slot of the block takes its prediction; then the n(t)
                  slots of lowest confidence among all slots of the block (a slot filled in
                  an earlier pass keeps the confidence it was filled with) are re-masked;
  random          the same, re-masking the n(t) slots of the block with the smallest
                  mix_seed(seed, REMASK_STREAM, pass, slot);
  commit          only the most confident masked slots of the block are filled, as many as
                  leave n(t) masked; nothing is re-masked, a filled slot is final (LLaDA);
  threshold tau   (overrides remask and iterations) every masked slot of the block with
                  confidence >= tau (compared in float64) is filled, or the most confident
                  one if none reaches tau; filled slots are final; the block takes as many
                  passes as it needs (<= its size).
Ties: the lowest confidence is re-masked first, the highest filled first, and among equal
confidences (or equal random keys) the lower position goes first.
A scheduled block always runs its T passes, as the paper's loop does: when n(t) reaches 0
before the last pass, the remaining passes find nothing masked and change nothing (they
skip the encoder but count in nfe). Without block_length the N slots are one block of T =
iterations passes. With it, the slots form ceil(N / block_length) blocks B, decoded left to
right, block i running iterations // B passes plus one if i < iterations % B (iterations
must be >= B unless a threshold is set); later blocks stay masked and are not predicted
until their turn. stop_early: when a pass's predictions over its block (kept tokens plus
new predictions) equal the previous pass's in the same block, the block takes them and is
done (without blocks: the request is done).

Sampling (temperature > 0) draws with ops.sample (top_k, top_p as in SamplingParams), seed
mix_seed(seed, SAMPLE_STREAM, pass, slot); the confidence is the drawn token's probability
under the model (softmax of the restricted logits, untempered), as at temperature 0. pass
counts the sequence's passes from 0 across blocks, slot its N slots from 0. A request's
seed is params.seed, or one drawn from the engine seed's generator.

length_candidates: each length is decoded as its own sequence in the same passes; every pass
computes the head at all N slots of these sequences, and when one is done its score is the
mean over its N final tokens of the log-softmax (restricted vocabulary) of its last pass.
The best score wins, the first listed on ties; the metrics and text are that sequence's
(until all are done, the first length's).

Metrics (the request's RequestMetrics, updated after every pass): nfe = passes run;
tokens_per_pass[i] = slots masked before pass i minus after it (sums to N); pass_texts = the
text after each pass, masked slots shown as the mask token; ttft = arrival to the end of
the first pass.

Execution. The executor batches passes at the iteration level: every step() runs one pass
over every admitted request; new requests join at the next pass, finished ones leave. The
state of all running sequences lives in one `SequenceBatch` (engine/mask_batch.py: padded
[sequences, slots] tensors on the engine's device), and every rule runs as tensor
operations over all of them; Python runs per request only to admit it and to build its
output (engine/mask_outputs.py). Text is decoded when an output's `text` is read, except for
return_pass_texts, which decodes after every pass.

Fault isolation. A pass computes everything that can fail (forward, predictions, rules,
scores) into a new batch before anything is replaced; if it raises, each request runs the
pass alone, and those that fail alone finish with finish_reason "error" while the others
go on. A request whose pass text cannot be decoded fails alone the same way.
"""
import time
from collections import Counter, deque
from dataclasses import dataclass

import torch

from engine.attention import AttentionMetadata
from engine.mask_batch import SequenceBatch
from engine.mask_outputs import MaskOutputProcessor
from engine.mask_schedule import SAMPLE_STREAM, num_blocks
from engine.mask_template import template_ids
from engine.output_processor import describe
from engine.outputs import RequestMetrics, RequestOutput
from engine.params import MaskPredictParams
from engine.profiling import ranged
from engine.seeding import mix_seeds_torch


class _Sequence:
    """The host's view of one target sequence (one length candidate): what outputs show."""

    __slots__ = ("request", "length", "tokens", "masked", "tokens_per_pass", "keeps_texts", "pass_texts", "score",
                 "finished")

    def __init__(self, request, length, mask_id):
        self.request, self.length = request, length
        self.tokens = [mask_id] * length  # after the latest pass
        self.masked = length  # slots masked after the latest pass
        self.tokens_per_pass: list[int] = []
        self.keeps_texts = request.params.return_pass_texts
        self.pass_texts: list[str] = []
        self.score: float | None = None
        self.finished = False


@dataclass
class _Request:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: MaskPredictParams
    seed: int
    metrics: RequestMetrics
    sequences: list
    features: tuple  # what its sequences use (pass_features): the batch skips what no row uses
    unfinished: int = 0  # sequences still refining
    error: str | None = None  # why it failed (or "aborted"): it leaves at the next _drop_done

    def release(self) -> None:
        """Called when the request leaves the executor: its sequences let go of it, which breaks
        the request <-> sequence cycle, so reference counting frees the request and all it holds
        at once. Left to the garbage collector, the report's batch-64, T = 1 decode left 1,664
        objects in cycles, and its ~2 collections took 0.59 ms per decode (0.14 ms without)."""
        for seq in self.sequences:
            seq.request = None

    def shown(self) -> _Sequence:
        """The sequence outputs show: the best-scoring once all are done, else the first."""
        if self.unfinished or len(self.sequences) == 1:
            return self.sequences[0]
        scores = [seq.score for seq in self.sequences]
        return self.sequences[scores.index(max(scores))]


@dataclass(frozen=True)
class _PassOutcome:
    batch: SequenceBatch  # the rows after the pass
    masked: torch.Tensor  # int64 [S]: slots masked after it
    done: torch.Tensor | None  # bool [S]; None when no row is done
    scores: torch.Tensor | None  # float64 [S]: mean log-probability (scored rows that are done)


def predict_slots(ops, batch: SequenceBatch, inputs, logits, features: frozenset):
    """Per head row of a pass (logits [R, V], restricted): the prediction and its confidence,
    the argmax, or a seeded draw for the predicted slots of sampled rows. Shared with the
    experiment's decoder (benchmarks/decoding.py), which drives SequenceBatch itself."""
    tokens, confidence = ops.confidence_argmax(logits)
    if "sampled" not in features:
        return tokens, confidence
    seq, slot = inputs.head.nonzero(as_tuple=True)  # head row i is (seq[i], slot[i])
    draw = (inputs.predicted[seq, slot] & (batch.temperature[seq] > 0)).nonzero()[:, 0]
    if not draw.numel():
        return tokens, confidence
    seq, slot, rows = seq[draw], slot[draw], logits.index_select(0, draw)
    seeds = mix_seeds_torch(batch.seed[seq], SAMPLE_STREAM, batch.passes_run[seq], slot)
    drawn = ops.sample(rows, batch.temperature[seq], batch.top_k[seq], batch.top_p[seq], seeds)
    probs = torch.softmax(rows.float(), dim=-1).gather(1, drawn[:, None])[:, 0]
    return tokens.index_copy(0, draw, drawn), confidence.index_copy(0, draw, probs)


def pass_features(params: MaskPredictParams) -> tuple:
    """The parts of a pass a request's sequences need: their rule ("rule:<name>" or
    "threshold"), and "stop_early", "sampled" (temperature > 0), "scored" (length candidates)."""
    features = ("threshold",) if params.threshold is not None else (f"rule:{params.remask}",)
    if params.stop_early:
        features += ("stop_early",)
    if params.temperature > 0:
        features += ("sampled",)
    if len(params.lengths) > 1:
        features += ("scored",)
    return features


def _ranges(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct ids as maximal [start, end) runs: [0, 1, 2, 7] -> [(0, 3), (7, 8)]."""
    runs = []
    for i in ids:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


class MaskPredictExecutor:
    """Runs mask-predict requests with iteration-level batching (module docstring)."""

    params_type = MaskPredictParams
    add_special_tokens = False  # the executor frames the prompt with its own template

    def __init__(self, loaded, config, ops):
        tok = loaded.tokenizer
        self.template = template_ids(tok, "mask-predict")
        self.model, self.ops, self.config = loaded.model, ops, config
        self.output_processor = MaskOutputProcessor(tok)
        self.mask_id = self.template[2]
        self.max_positions = self.model.max_positions
        self.device = next(self.model.parameters()).device
        vocab_size = loaded.vocab_size
        banned = sorted({i for i in tok.all_special_ids if i != tok.eos_token_id and i < vocab_size})
        self.banned_ranges = _ranges(banned)  # [start, end) column ranges: a fill each, no gather
        self.waiting: deque[_Request] = deque()
        self.running: list[_Request] = []
        self._reset_batch()

    def _reset_batch(self):
        self.batch: SequenceBatch | None = None
        self.rows: list[_Sequence] = []  # the batch's rows, in order
        self.features: Counter = Counter()  # over the rows
        self.live_tokens = 0  # encoder tokens of a pass over every row

    # ---- requests -------------------------------------------------------------------------

    def check_request(self, prompt_token_ids, params) -> None:
        """ValueError when the request could never fit the model's positions or one pass."""
        n, lengths = len(prompt_token_ids), params.lengths
        for length in lengths:
            total = n + length + 2
            if total > self.max_positions:
                raise ValueError(
                    f"prompt ({n} tokens) + length {length} + 2 special tokens = {total} "
                    f"exceeds the model's max positions ({self.max_positions})"
                )
            blocks = num_blocks(length, params.block_length)
            if params.threshold is None and params.iterations < blocks:
                raise ValueError(
                    f"iterations ({params.iterations}) must be >= the number of blocks ({blocks}) "
                    f"of length {length} in blocks of block_length {params.block_length}"
                )
        need = sum(lengths) + (n + 2) * len(lengths)
        if need > self.config.max_num_batched_tokens:
            raise ValueError(
                f"the request needs {need} tokens per pass, more than max_num_batched_tokens "
                f"({self.config.max_num_batched_tokens})"
            )
        if len(lengths) > self.config.max_num_seqs:
            raise ValueError(
                f"length_candidates ({len(lengths)}) exceed max_num_seqs ({self.config.max_num_seqs})"
            )

    def add(self, request_id, prompt, prompt_token_ids, params, seed, arrival_time) -> None:
        request = _Request(request_id, prompt, prompt_token_ids, params, seed,  # the engine's own list
                           RequestMetrics(arrival_time=arrival_time, prompt_tokens=len(prompt_token_ids)),
                           [], pass_features(params))
        request.sequences = [_Sequence(request, n, self.mask_id) for n in params.lengths]
        request.unfinished = len(request.sequences)
        self.waiting.append(request)

    def abort(self, request_id) -> bool:
        for request in self.waiting:
            if request.request_id == request_id:
                self.waiting.remove(request)
                request.release()
                return True
        for request in self.running:
            if request.request_id == request_id:
                request.error = "aborted"
                self._drop_done()
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
        self._reset_batch()
        outputs = [self.output_processor.failed(r, message) for r in requests]
        for request in requests:
            request.release()
        return outputs

    # ---- admission ------------------------------------------------------------------------

    def _admit(self):
        """FCFS: the oldest waiting requests join while the pass stays within the budgets."""
        tokens, count, joined = self.live_tokens, len(self.rows), []
        while self.waiting:
            request = self.waiting[0]
            need = sum(len(request.prompt_token_ids) + seq.length + 2 for seq in request.sequences)
            if tokens + need > self.config.max_num_batched_tokens or count + len(request.sequences) > self.config.max_num_seqs:
                break
            self.waiting.popleft()
            request.metrics.first_scheduled_time = time.perf_counter()
            self.running.append(request)
            joined.append(request)
            tokens, count = tokens + need, count + len(request.sequences)
        if not joined:
            return
        # by frame length: sequences of one length are then consecutive rows, which the CPU
        # attention can run as one unpadded call per run (engine/attention/torch_backend.py)
        sequences = sorted((seq for r in joined for seq in r.sequences),
                           key=lambda seq: len(seq.request.prompt_token_ids) + seq.length)
        new = SequenceBatch.build(
            [(seq.request.prompt_token_ids, seq.length, seq.request.params, seq.request.seed,
              len(seq.request.sequences) > 1) for seq in sequences], self.template, self.device)
        self.batch = new if self.batch is None else self.batch.extend(new)
        self.rows += sequences
        for request in joined:
            for _ in request.sequences:
                self.features.update(request.features)
        self.live_tokens = tokens

    # ---- one pass -------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one pass over the admitted requests; an output for each of them."""
        with ranged("schedule"):
            self._admit()
        if not self.running:
            return []
        features = frozenset(name for name, count in self.features.items() if count > 0)
        try:
            outcome = self._refine(self.batch, features)
        except Exception:  # noqa: BLE001 - find the request(s) that caused it
            return self._step_apart()
        self.batch = outcome.batch
        self._record(self.rows, outcome)
        return self._outputs(list(self.running))

    def _step_apart(self) -> list[RequestOutput]:
        """The pass again, one request at a time; a request that fails alone fails."""
        rows_of = {}
        for index, seq in enumerate(self.rows):
            rows_of.setdefault(id(seq.request), []).append(index)
        for request in self.running:
            rows = rows_of[id(request)]
            index = torch.tensor(rows, device=self.device)
            try:
                outcome = self._refine(self.batch.select(index), frozenset(request.features))
            except Exception as error:  # noqa: BLE001
                request.error = describe(error)
                continue
            self.batch = self.batch.assign(index, outcome.batch)
            self._record([self.rows[i] for i in rows], outcome)
        return self._outputs(list(self.running))

    def _refine(self, batch: SequenceBatch, features: frozenset) -> _PassOutcome:
        """One pass over `batch`: the batch after it, computed without changing anything."""
        inputs = batch.pass_inputs(features)
        tokens, confidence, logits = batch.tokens, batch.confidence, None
        if inputs.head_rows.numel():  # else every row's block is waiting for passes to run out
            with ranged("forward"):
                meta = AttentionMetadata("encoder", inputs.cu_seqlens)
                # the last layer's MLP runs at the head's rows only
                hidden = self.model(inputs.input_ids, inputs.positions, meta, inputs.head_rows)
                logits = self.model.compute_logits(hidden)
                for start, end in self.banned_ranges:  # a fresh tensor: a few columns, in place
                    logits[:, start:end] = float("-inf")
            with ranged("predict"):
                head_tokens, head_confidence = predict_slots(self.ops, batch, inputs, logits, features)
                tokens = tokens.masked_scatter(inputs.head, head_tokens)
                confidence = confidence.masked_scatter(inputs.head, head_confidence)
        with ranged("remask"):
            after, masked, done = batch.after_pass(inputs, tokens, confidence, features, self.mask_id)
            scores = self._scores(after, inputs, logits) if "scored" in features and done is not None else None
        return _PassOutcome(after, masked, done, scores)

    @staticmethod
    def _scores(after, inputs, logits):
        """Float64 [S]: each scored row's mean log-probability of its tokens after the pass."""
        scores = torch.zeros(after.size, dtype=torch.float64, device=after.length.device)
        if logits is None:
            return scores
        seq, slot = inputs.head.nonzero(as_tuple=True)
        rows = after.scored[seq].nonzero()[:, 0]
        seq, slot = seq[rows], slot[rows]
        log_probs = torch.log_softmax(logits.index_select(0, rows).float(), dim=-1)
        picked = log_probs.gather(1, after.tokens[seq, slot][:, None])[:, 0]
        return scores.index_add_(0, seq, picked.double()) / after.length

    # ---- after a pass ---------------------------------------------------------------------

    def _record(self, sequences, outcome: _PassOutcome) -> None:
        """Copy what the host needs of a pass (one transfer) into `sequences`, the rows'
        sequences in order."""
        o = outcome
        columns = [o.batch.tokens, o.masked[:, None]] + ([] if o.done is None else [o.done[:, None]])
        for seq, row in zip(sequences, torch.cat(columns, dim=1).tolist()):
            seq.tokens = row[: seq.length]
            masked = row[-1] if o.done is None else row[-2]
            seq.tokens_per_pass.append(seq.masked - masked)
            seq.masked = masked
            if seq.keeps_texts:
                seq.pass_texts.append(None)  # decoded by the output processor
            if o.done is not None and row[-1]:
                seq.finished = True
                seq.request.unfinished -= 1
        if o.scores is not None:
            for seq, score in zip(sequences, o.scores.tolist()):
                if seq.finished:  # done in this pass: the others left the batch before it
                    seq.score = score

    def _outputs(self, requests) -> list[RequestOutput]:
        """Outputs of a pass (of a "final_only" request, only the last); finished and failed
        requests leave."""
        with ranged("detokenize"):
            self.output_processor.decode_pass_texts(requests)
        now = time.perf_counter()
        outputs = []
        for request in requests:
            metrics = request.metrics
            if metrics.first_token_time is None:
                metrics.first_token_time = now
            if request.error is not None:
                outputs.append(self.output_processor.failed(request, request.error))
                continue
            if not request.unfinished:
                metrics.finished_time = now
            elif request.params.output_kind == "final_only":
                continue
            outputs.append(self.output_processor.output(request))
        self._drop_done()
        return outputs

    def _drop_done(self) -> None:
        """Remove finished and failed requests, and the rows of sequences that are done."""
        gone = [r for r in self.running if r.error is not None or not r.unfinished]
        keep = [i for i, seq in enumerate(self.rows) if not seq.finished and seq.request.error is None]
        if not keep:  # every row is done (each pass of T = 1): nothing to subtract row by row
            self._reset_batch()
        elif len(keep) < len(self.rows):
            for seq in self.rows:
                if seq.finished or seq.request.error is not None:
                    self.features.subtract(seq.request.features)
                    self.live_tokens -= len(seq.request.prompt_token_ids) + seq.length + 2
            rows = [self.rows[i] for i in keep]
            widths = {"slots": max(seq.length for seq in rows),
                      "frame": max(len(seq.request.prompt_token_ids) + seq.length for seq in rows) + 3}
            self.batch = self.batch.select(torch.tensor(keep, device=self.device), widths)
            self.rows = rows
        if gone:
            self.running = [r for r in self.running if r.error is None and r.unfinished]
            for request in gone:
                request.release()
