"""The state of every running mask-predict sequence, as tensors on the engine's device.

Layout: padded rows. Row s is one sequence (one length candidate of a request), in the
executor's running order; the tensors are
  [S]      per-sequence numbers (length, current block, passes run, seed, rule, ...);
  [S, W]   per-slot state, column j = target slot j (W = the longest length; columns at or
           past a row's length are padding: never masked, never in a block);
  [S, F]   `frame`: the encoder input of each sequence, [CLS] prompt slots [SEP], padded;
           column F - 1 is scratch, where padding slots write, so the frame of every row
           is refreshed with one scatter per pass;
  `drops`  [S, W] as well: the schedule of each slot's block as its drops
           (engine/mask_schedule.py), so n(t) of the current block is one comparison with
           the block's pass counter, however many passes the block has.
Padding costs columns, not rows: a batch mixes prompt and target lengths freely, every rule
is a handful of [S, W] operations, and a pass's packed input is one gather from the frames
(the gather index, positions and cu_seqlens are kept while the rows and their lengths stay
the same). The current block is kept as a mask (`in_block`) and changes only in the passes
where some block ends. Rows join by `extend` (admission) and leave by `select` (finished,
failed or aborted sequences), which also narrows the widths to what the remaining rows need.

A pass is pure: `pass_inputs` says what to run, the executor computes predictions, and
`after_pass` returns a new batch; nothing is written into the old one, so a pass that
raises leaves the state as it was.
"""
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache

import numpy as np
import torch

from engine.mask_rules import REMASK_RULES, PassView, threshold_fill
from engine.mask_schedule import masked_drops, split_blocks
from engine.seeding import as_int64

# the [S] tensors of a new sequence, made from one int64 and one float64 table ([columns, S]:
# each field is a row of its table, one upload per table; the rows do not overlap, so a
# field written in place would not touch another)
_INT_COLUMNS = ("frame_len", "first_slot", "length", "block_length", "passes_base", "passes_extra", "rule",
                "seed", "top_k", "block_end", "block_passes", "block", "block_pass", "passes_run")
_BOOL_COLUMNS = ("stop_early", "scored", "scheduled", "has_previous")  # stored as int64, cast in one op
_FLOAT_COLUMNS = ("threshold",)
_FLOAT32_COLUMNS = ("temperature", "top_p")  # stored as float64, cast in one op


@lru_cache(maxsize=256)
def _blocks_and_schedule(length: int, block_length: int | None, iterations: int, schedule: str | None):
    """(block length, passes base, passes extra, drops of every slot) of a target length;
    schedule None (a threshold) has no drops (zeros)."""
    blocks = split_blocks(length, block_length, iterations)
    base, extra = divmod(iterations, len(blocks))
    drops = [0] * length if schedule is None else [
        d for b in blocks for d in masked_drops(b.end - b.start, b.passes, schedule)]
    return blocks[0].end, base, extra, drops


def _new_row(prompt, length, p, seed, scored, cls_id, sep_id, mask_id) -> tuple:
    """A new sequence in its first block: (frame, drops, its int and bool columns, its float
    columns), in the order of the tables above."""
    scheduled = p.threshold is None
    size, base, extra, drops = _blocks_and_schedule(length, p.block_length, p.iterations,
                                                    p.schedule if scheduled else None)
    ints = (len(prompt) + length + 2, 1 + len(prompt), length, size, base, extra, list(REMASK_RULES).index(p.remask),
            as_int64(seed), p.top_k, size, (base + (extra > 0)) if scheduled else 0, 0, 0, 0,
            p.stop_early, scored, scheduled, False)
    floats = (float("nan") if p.threshold is None else p.threshold, p.temperature, p.top_p)
    return [cls_id, *prompt, *[mask_id] * length, sep_id], drops, ints, floats


@lru_cache(maxsize=64)
def _arange(n: int, device: torch.device) -> torch.Tensor:
    """[0, n) as int64, made once per width and device (never written to)."""
    return torch.arange(n, device=device)


def _columns(kind, pad=0):
    """A field whose tensors are [S, width of `kind`], padded with `pad` when rows join."""
    return field(metadata={"columns": kind, "pad": pad})


def _derived():
    """A field computed from the others when rows join or leave (SequenceBatch.of)."""
    return field(metadata={"derived": True})


@dataclass(frozen=True)
class Packing:
    """Where a pass's rows go in the packed encoder input."""

    gather: torch.Tensor  # int64 [T]: position in frame.view(-1) of each packed token
    positions: torch.Tensor  # int64 [T]
    cu_seqlens: torch.Tensor  # int32 [rows that run + 1]
    slot_rows: torch.Tensor  # int64 [S, W]: packed row of each slot (of the rows that run)


class _PackingCache:
    """The packing of a pass where every row runs, kept while the rows stay the same."""

    def __init__(self):
        self.all_rows: Packing | None = None


@dataclass(frozen=True)
class SequenceBatch:
    # fixed when the sequence joins
    frame: torch.Tensor = _columns("frame")  # int64 [S, F]
    frame_len: torch.Tensor  # int64 [S]: tokens of the encoder input
    first_slot: torch.Tensor  # int64 [S]: frame column of slot 0 (1 + prompt length)
    length: torch.Tensor  # int64 [S]: N
    block_length: torch.Tensor  # int64 [S]: N without blocks
    passes_base: torch.Tensor  # int64 [S]: block b runs passes_base + (b < passes_extra) passes
    passes_extra: torch.Tensor  # int64 [S]
    rule: torch.Tensor  # int64 [S]: index into REMASK_RULES
    scheduled: torch.Tensor  # bool [S]: False under a confidence threshold
    threshold: torch.Tensor  # float64 [S]: NaN when the remask rule decides
    stop_early: torch.Tensor  # bool [S]
    scored: torch.Tensor  # bool [S]: a length candidate (the head runs at all its slots)
    seed: torch.Tensor  # int64 [S]: the request seed's bits
    temperature: torch.Tensor  # float32 [S]
    top_k: torch.Tensor  # int64 [S]
    top_p: torch.Tensor  # float32 [S]
    # changed by passes
    tokens: torch.Tensor = _columns("slots")  # int64 [S, W]
    confidence: torch.Tensor = _columns("slots")  # float32 [S, W]
    masked: torch.Tensor = _columns("slots", False)  # bool [S, W]
    in_block: torch.Tensor = _columns("slots", False)  # bool [S, W]: the current block's slots
    drops: torch.Tensor = _columns("slots")  # int64 [S, W]: per slot of a block, its schedule's drops
    previous: torch.Tensor = _columns("slots")  # int64 [S, W]: the block's last predictions (stop_early)
    has_previous: torch.Tensor  # bool [S]
    block: torch.Tensor  # int64 [S]: index of the current block
    block_end: torch.Tensor  # int64 [S]: one past its last slot
    block_passes: torch.Tensor  # int64 [S]: its scheduled passes (0 under a threshold)
    block_pass: torch.Tensor  # int64 [S]: passes run in it
    passes_run: torch.Tensor  # int64 [S]
    # derived from the above whenever rows join or leave
    frame_columns: torch.Tensor = _derived()  # int64 [S, W]: frame column of each slot (padding: scratch)
    valid: torch.Tensor = _derived()  # bool [S, W]: slot < length
    packing: _PackingCache = _derived()

    # ---- rows ----------------------------------------------------------------------------

    @staticmethod
    def build(sequences, template, device) -> "SequenceBatch":
        """Rows for new sequences: (prompt ids, length, params, seed, scored) each;
        template = (cls id, sep id, mask id)."""
        cls_id, sep_id, mask_id = template
        rows = [_new_row(prompt, length, p, seed, scored, cls_id, sep_id, mask_id)
                for prompt, length, p, seed, scored in sequences]
        frames, drops, ints, floats = zip(*rows)
        tensors = {}
        tables = ((ints, np.int64, _INT_COLUMNS, _BOOL_COLUMNS, torch.bool),
                  (floats, np.float64, _FLOAT_COLUMNS, _FLOAT32_COLUMNS, torch.float32))
        for table, dtype, names, cast_names, cast in tables:
            columns = torch.from_numpy(np.array(table, dtype=dtype).T.copy()).to(device)
            tensors.update(zip(names, columns[: len(names)].unbind(0)))
            tensors.update(zip(cast_names, columns[len(names):].to(cast).unbind(0)))
        # numpy, one upload each: per-row torch writes would cost more
        for name, values, width in (("frame", frames, max(map(len, frames)) + 1),  # + the scratch column
                                    ("drops", drops, max(map(len, drops)))):
            padded = np.zeros((len(rows), width), dtype=np.int64)
            for i, row in enumerate(values):
                padded[i, : len(row)] = row
            tensors[name] = torch.from_numpy(padded).to(device)
        slots = _arange(tensors["drops"].shape[1], device)[None, :]
        masked = slots < tensors["length"][:, None]
        return SequenceBatch.of(
            **tensors, tokens=torch.where(masked, mask_id, 0), confidence=torch.zeros(masked.shape, device=device),
            masked=masked, in_block=slots < tensors["block_end"][:, None], previous=torch.zeros_like(tensors["drops"]))

    @staticmethod
    def of(**tensors) -> "SequenceBatch":
        """A batch from its state tensors; the derived fields are computed here."""
        slots = _arange(tensors["tokens"].shape[1], tensors["tokens"].device)[None, :]
        valid = slots < tensors["length"][:, None]
        scratch = tensors["frame"].shape[1] - 1
        frame_columns = torch.where(valid, tensors["first_slot"][:, None] + slots, scratch)
        return SequenceBatch(**tensors, frame_columns=frame_columns, valid=valid, packing=_PackingCache())

    def state(self) -> dict:
        """The fields that are not derived."""
        return {f.name: getattr(self, f.name) for f in fields(self) if "derived" not in f.metadata}

    @property
    def size(self) -> int:
        return self.length.shape[0]

    def extend(self, other: "SequenceBatch") -> "SequenceBatch":
        """These rows, then other's, padded to the wider of each width."""
        joined = {}
        for f in fields(self):
            if "derived" in f.metadata:
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if "columns" in f.metadata:
                width = max(a.shape[1], b.shape[1])
                a, b = (_pad_columns(t, width, f.metadata["pad"]) for t in (a, b))
            joined[f.name] = torch.cat([a, b])
        return SequenceBatch.of(**joined)

    def select(self, rows: torch.Tensor, widths: dict | None = None) -> "SequenceBatch":
        """The rows `rows` (int64 indices), in that order. widths ({"slots": W, "frame": F},
        known to the caller without reading the device) narrows the column tensors to what
        those rows need."""
        kept = {}
        for name, t in self.state().items():
            t = t.index_select(0, rows)
            kind = _COLUMN_KINDS.get(name)
            kept[name] = t if widths is None or kind is None else t[:, : widths[kind]].contiguous()
        return SequenceBatch.of(**kept)

    def assign(self, rows: torch.Tensor, other: "SequenceBatch") -> "SequenceBatch":
        """A copy with rows `rows` replaced by other's rows (of the same widths)."""
        changed = {name: t.index_copy(0, rows, getattr(other, name)) for name, t in self.state().items()}
        return replace(self, **changed)

    # ---- one pass ------------------------------------------------------------------------

    def pass_inputs(self, features: frozenset) -> "PassInputs":
        """The encoder input of this pass and the slots the MLM head runs at.

        A row runs if its block has a masked slot, or if it is scored (its last pass's
        log-probabilities are needed whichever pass that is); the head runs at the masked
        slots of the block, and at every slot of a scored row ("scored" in features)."""
        predicted = self.masked & self.in_block
        head = predicted | (self.scored[:, None] & self.valid) if "scored" in features else predicted
        run = head.any(1)
        if bool(run.all()):  # the usual pass: the packing of the last one still holds
            if self.packing.all_rows is None:
                self.packing.all_rows = self._packing(self.frame_len, None)
            packing = self.packing.all_rows
        else:
            packing = self._packing(torch.where(run, self.frame_len, 0), run)
        return PassInputs(
            predicted=predicted, head=head, input_ids=self.frame.view(-1).index_select(0, packing.gather),
            positions=packing.positions, cu_seqlens=packing.cu_seqlens,
            head_rows=packing.slot_rows.masked_select(head),  # row-major, as masked_scatter takes them back
        )

    def _packing(self, lens, run) -> Packing:
        """The packing of the rows with lens > 0 (run: bool [S], None when all run)."""
        columns = _arange(self.frame.shape[1], self.frame.device)
        take = columns[None, :] < lens[:, None]
        ends = lens.cumsum(0)
        starts = ends - lens
        gather = (_arange(self.size, self.frame.device) * self.frame.shape[1])[:, None] + columns
        return Packing(
            gather=gather.masked_select(take), positions=columns.expand_as(take).masked_select(take),
            cu_seqlens=torch.cat([ends.new_zeros(1), ends if run is None else ends.masked_select(run)]).to(torch.int32),
            slot_rows=(starts + self.first_slot)[:, None] + _arange(self.tokens.shape[1], self.tokens.device),
        )

    def after_pass(self, inputs: "PassInputs", tokens: torch.Tensor, confidence: torch.Tensor,
                   features: frozenset, mask_id: int):
        """Apply the pass's predictions (tokens/confidence [S, W], read at the predicted
        slots) and the rules. Returns (the batch after the pass, masked slots per row [S],
        done [S] bool or None when no block ended).

        features names what the rows use ("rule:<name>", "threshold", "stop_early", "scored"),
        so what no row uses costs nothing. A done row keeps its last block's fields: it leaves
        the batch (select) before another pass."""
        in_block, predicted = self.in_block, inputs.predicted
        view = tokens
        if inputs.head is not predicted:  # scored rows: predictions at unmasked slots are not taken
            view = torch.where(predicted, tokens, self.tokens)
            confidence = torch.where(predicted, confidence, self.confidence)
        keep_masked = ((self.block_pass[:, None] < self.drops) & in_block).sum(1)  # n(t) of each block
        if "threshold" not in features and not bool(keep_masked.any()):
            # n(t) = 0 in every row (each block's last scheduled pass; every pass of T = 1):
            # whatever the rule, every prediction is kept and nothing goes back to the mask
            fill, remask = predicted, torch.zeros_like(predicted)
        else:
            fill, remask = self._decide(PassView(predicted, confidence, in_block, keep_masked, self.seed,
                                                 self.passes_run), features)
        scheduled_left = self.block_pass + 1 < self.block_passes  # a scheduled block runs all its passes
        converged = None
        if "stop_early" in features:
            converged = self.stop_early & self.has_previous & ((view == self.previous) | ~in_block).all(1)
            fill = torch.where(converged[:, None], predicted, fill)
            remask = remask & ~converged[:, None]
            scheduled_left = scheduled_left & ~converged

        new_tokens = torch.where(remask, mask_id, torch.where(fill, view, self.tokens))
        masked = (self.masked & ~fill) | remask
        block_open = (masked & in_block).any(1) | scheduled_left
        after = dict(tokens=new_tokens, confidence=confidence, masked=masked, passes_run=self.passes_run + 1,
                     frame=self.frame.scatter(1, self.frame_columns, new_tokens))
        if converged is not None:
            after.update(previous=view, has_previous=block_open)
        done, next_blocks = None, False
        if not bool(block_open.all()):
            last_block = self.block_end >= self.length
            done = ~block_open & last_block
            # a row whose last block ended is done and leaves: only the others need a next block
            next_blocks = not bool(last_block.all())
        after.update(self._next_blocks(~block_open) if next_blocks else dict(block_pass=self.block_pass + 1))
        return replace(self, **after), masked.sum(1), done

    def _next_blocks(self, ended):
        """The block fields after the rows `ended` (bool [S]) moved on to their next block."""
        block = self.block + ended
        end = torch.where(ended, torch.minimum(self.block_end + self.block_length, self.length), self.block_end)
        slots = _arange(self.tokens.shape[1], self.tokens.device)[None, :]
        next_block = (slots >= self.block_end[:, None]) & (slots < end[:, None])
        passes = (self.passes_base + (block < self.passes_extra)) * self.scheduled
        return dict(
            block=block, block_end=end, in_block=torch.where(ended[:, None], next_block, self.in_block),
            block_passes=torch.where(ended, passes, self.block_passes),
            block_pass=torch.where(ended, 0, self.block_pass + 1),
        )

    def _decide(self, view: PassView, features: frozenset):
        """(fill, remask) of every row by its own rule; rules no row uses are skipped."""
        fill = remask = None
        for index, (name, rule) in enumerate(REMASK_RULES.items()):
            if f"rule:{name}" not in features:
                continue
            rule_fill, rule_remask = rule(view)
            if fill is None:  # the first rule in use answers for every row, the others correct theirs
                fill, remask = rule_fill, rule_remask
            else:
                rows = (self.rule == index)[:, None]
                fill, remask = torch.where(rows, rule_fill, fill), torch.where(rows, rule_remask, remask)
        if "threshold" in features:
            rows = ~self.scheduled[:, None]
            by_threshold = threshold_fill(view, self.threshold)
            if fill is None:
                fill, remask = by_threshold, torch.zeros_like(by_threshold)
            else:
                fill, remask = torch.where(rows, by_threshold, fill), remask & ~rows
        return fill, remask


_COLUMN_KINDS = {f.name: f.metadata["columns"] for f in fields(SequenceBatch) if "columns" in f.metadata}


@dataclass(frozen=True)
class PassInputs:
    predicted: torch.Tensor  # bool [S, W]: masked slots of the block
    head: torch.Tensor  # bool [S, W]: slots the MLM head runs at (predicted, and scored rows' slots)
    input_ids: torch.Tensor  # int64 [T]: the packed frames of the rows that run
    positions: torch.Tensor  # int64 [T]
    cu_seqlens: torch.Tensor  # int32 [rows that run + 1]
    head_rows: torch.Tensor  # int64 [R]: the packed row of each head slot, row-major


def _pad_columns(t: torch.Tensor, width: int, pad) -> torch.Tensor:
    if t.shape[1] == width:
        return t
    extra = torch.full((t.shape[0], width - t.shape[1]), pad, dtype=t.dtype, device=t.device)
    return torch.cat([t, extra], dim=1)
