"""The state of every running mask-predict sequence, as tensors on the engine's device.

Layout: padded rows. Row s is one sequence (one length candidate of a request), in the
executor's running order; the tensors are
  [S]      per-sequence numbers (length, block, passes run, seed, rule, ...);
  [S, W]   per-slot state, column j = target slot j (W = the longest length; columns at or
           past a row's length are padding: never masked, never in a block);
  [S, F]   `frame`: the encoder input of each sequence, [CLS] prompt slots [SEP], padded;
           column F - 1 is scratch, where padding slots write, so the frame of every row
           is refreshed with one scatter per pass;
  [S, Tw]  `schedule`: n(t) of every scheduled pass, block after block.
Padding costs columns, not rows: a batch mixes prompt and target lengths freely, every rule
is a handful of [S, W] operations, and a pass's packed input is one boolean gather from the
frames. Rows join by `extend` (admission) and leave by `select` (finished, failed or aborted
sequences), which also narrows the widths to what the remaining rows need.

A pass is pure: `pass_inputs` says what to run, the executor computes predictions, and
`after_pass` returns a new batch; nothing is written into the old one, so a pass that
raises leaves the state as it was.
"""
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache

import torch

from engine.mask_rules import REMASK_RULES, PassView, threshold_fill
from engine.mask_schedule import schedule_table, split_blocks
from engine.seeding import as_int64

# the [S] tensors fixed when a sequence joins, and their dtypes
_ROW_DTYPES = {
    "frame_len": torch.int64, "first_slot": torch.int64, "length": torch.int64, "block_length": torch.int64,
    "num_blocks": torch.int64, "passes_base": torch.int64, "passes_extra": torch.int64, "rule": torch.int64,
    "threshold": torch.float64, "stop_early": torch.bool, "scored": torch.bool, "seed": torch.int64,
    "temperature": torch.float32, "top_k": torch.int64, "top_p": torch.float32,
}


def _new_row(prompt, length, p, seed, scored, cls_id, sep_id, mask_id) -> dict:
    """A new sequence's fixed values (the keys of _ROW_DTYPES, frame and schedule as lists)."""
    blocks = split_blocks(length, p.block_length, p.iterations)
    base, extra = divmod(p.iterations, len(blocks))
    return dict(
        frame=[cls_id, *prompt, *[mask_id] * length, sep_id], frame_len=len(prompt) + length + 2,
        first_slot=1 + len(prompt), length=length, block_length=blocks[0].end, num_blocks=len(blocks),
        passes_base=base, passes_extra=extra,
        schedule=schedule_table(blocks, p.schedule) if p.threshold is None else [0],
        rule=list(REMASK_RULES).index(p.remask), threshold=float("nan") if p.threshold is None else p.threshold,
        stop_early=p.stop_early, scored=scored, seed=as_int64(seed), temperature=p.temperature,
        top_k=p.top_k, top_p=p.top_p,
    )


@lru_cache(maxsize=64)
def _arange(n: int, device: torch.device) -> torch.Tensor:
    """[0, n) as int64, made once per width and device (never written to)."""
    return torch.arange(n, device=device)


def _columns(kind, pad=0):
    """A field whose tensors are [S, width of `kind`], padded with `pad` when rows join."""
    return field(metadata={"columns": kind, "pad": pad})


@dataclass(frozen=True)
class SequenceBatch:
    # fixed when the sequence joins
    frame: torch.Tensor = _columns("frame")  # int64 [S, F]
    frame_len: torch.Tensor  # int64 [S]: tokens of the encoder input
    first_slot: torch.Tensor  # int64 [S]: frame column of slot 0 (1 + prompt length)
    length: torch.Tensor  # int64 [S]: N
    block_length: torch.Tensor  # int64 [S]: N without blocks
    num_blocks: torch.Tensor  # int64 [S]
    passes_base: torch.Tensor  # int64 [S]: block b runs passes_base + (b < passes_extra) passes
    passes_extra: torch.Tensor  # int64 [S]
    schedule: torch.Tensor = _columns("schedule")  # int64 [S, Tw]
    rule: torch.Tensor  # int64 [S]: index into REMASK_RULES
    threshold: torch.Tensor  # float64 [S]: NaN when the remask rule decides
    stop_early: torch.Tensor  # bool [S]
    scored: torch.Tensor  # bool [S]: a length candidate (the head runs at all its slots)
    seed: torch.Tensor  # int64 [S]: the request seed's bits
    temperature: torch.Tensor  # float32 [S]
    top_k: torch.Tensor  # int64 [S]
    top_p: torch.Tensor  # float32 [S]
    # changed by every pass
    tokens: torch.Tensor = _columns("slots")  # int64 [S, W]
    confidence: torch.Tensor = _columns("slots")  # float32 [S, W]
    masked: torch.Tensor = _columns("slots", False)  # bool [S, W]
    previous: torch.Tensor = _columns("slots")  # int64 [S, W]: the block's last predictions (stop_early)
    has_previous: torch.Tensor  # bool [S]
    block: torch.Tensor  # int64 [S]: current block; == num_blocks when done
    block_pass: torch.Tensor  # int64 [S]: passes run in the current block
    passes_run: torch.Tensor  # int64 [S]
    # derived from the above whenever rows join or leave
    frame_columns: torch.Tensor = field(metadata={"derived": True})  # int64 [S, W]: frame column of each
    # slot; padding slots point at the scratch column

    # ---- rows ----------------------------------------------------------------------------

    @staticmethod
    def build(sequences, template, device) -> "SequenceBatch":
        """Rows for new sequences: (prompt ids, length, params, seed, scored) each;
        template = (cls id, sep id, mask id)."""
        cls_id, sep_id, mask_id = template
        rows = [_new_row(prompt, length, p, seed, scored, cls_id, sep_id, mask_id)
                for prompt, length, p, seed, scored in sequences]
        count, width = len(rows), max(r["length"] for r in rows)
        tensors = {name: torch.tensor([r[name] for r in rows], dtype=dtype, device=device)
                   for name, dtype in _ROW_DTYPES.items()}
        for name, width_of in (("frame", max(len(r["frame"]) for r in rows) + 1),  # + the scratch column
                               ("schedule", max(len(r["schedule"]) for r in rows))):
            tensors[name] = torch.tensor([r[name] + [0] * (width_of - len(r[name])) for r in rows], device=device)
        slots = torch.arange(width, device=device)[None, :] < tensors["length"][:, None]
        return SequenceBatch.of(
            **tensors, tokens=torch.where(slots, mask_id, 0), confidence=torch.zeros(count, width, device=device),
            masked=slots, previous=torch.zeros(count, width, dtype=torch.int64, device=device),
            has_previous=torch.zeros(count, dtype=torch.bool, device=device),
            **{name: torch.zeros(count, dtype=torch.int64, device=device) for name in ("block", "block_pass", "passes_run")},
        )

    @staticmethod
    def of(**tensors) -> "SequenceBatch":
        """A batch from its state tensors; the derived ones are computed here."""
        slots = _arange(tensors["tokens"].shape[1], tensors["tokens"].device)[None, :]
        scratch = tensors["frame"].shape[1] - 1
        frame_columns = torch.where(slots < tensors["length"][:, None], tensors["first_slot"][:, None] + slots, scratch)
        return SequenceBatch(**tensors, frame_columns=frame_columns)

    def state(self) -> dict:
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
        """The rows `rows` (int64 indices), in that order. widths ({"slots": W, "frame": F,
        "schedule": Tw}, known to the caller without reading the device) narrows the column
        tensors to what those rows need."""
        kept = {}
        for f in fields(self):
            if "derived" in f.metadata:
                continue
            t = getattr(self, f.name).index_select(0, rows)
            kept[f.name] = t if widths is None or "columns" not in f.metadata else t[:, : widths[f.metadata["columns"]]]
        return SequenceBatch.of(**kept)

    def assign(self, rows: torch.Tensor, other: "SequenceBatch") -> "SequenceBatch":
        """A copy with rows `rows` replaced by other's rows (of the same widths)."""
        return SequenceBatch(**{name: t.index_copy(0, rows, getattr(other, name)) for name, t in self.state().items()},
                             frame_columns=self.frame_columns)

    # ---- one pass ------------------------------------------------------------------------

    def in_block(self) -> torch.Tensor:
        """Bool [S, W]: the slots of each row's current block."""
        slots = _arange(self.tokens.shape[1], self.tokens.device)[None, :]
        start = self.block * self.block_length
        end = torch.minimum(start + self.block_length, self.length)
        return (slots >= start[:, None]) & (slots < end[:, None])

    def pass_inputs(self, features: frozenset) -> "PassInputs":
        """The encoder input of this pass and the rows the MLM head runs at.

        A row runs if its block has a masked slot, or if it is scored (its last pass's
        log-probabilities are needed whichever pass that is); the head runs at the masked
        slots of the block, and at every slot of a scored row ("scored" in features)."""
        in_block = self.in_block()
        predicted = self.masked & in_block
        head = predicted
        if "scored" in features:
            slots = _arange(self.tokens.shape[1], self.tokens.device)[None, :]
            head = predicted | (self.scored[:, None] & (slots < self.length[:, None]))
        run = head.any(1)
        lens = torch.where(run, self.frame_len, 0)
        columns = _arange(self.frame.shape[1], self.frame.device)
        take = columns[None, :] < lens[:, None]
        ends = lens.cumsum(0)
        head_seq, head_slot = head.nonzero(as_tuple=True)
        return PassInputs(  # masked_select keeps row-major order, as the packing needs
            in_block=in_block, predicted=predicted, head=head, head_seq=head_seq, head_slot=head_slot,
            input_ids=self.frame.masked_select(take), positions=columns.expand_as(take).masked_select(take),
            cu_seqlens=torch.cat([ends.new_zeros(1), ends.masked_select(run)]).to(torch.int32),
            head_rows=(ends - lens + self.first_slot).index_select(0, head_seq) + head_slot,
        )

    def after_pass(self, inputs: "PassInputs", tokens: torch.Tensor, confidence: torch.Tensor,
                   features: frozenset, mask_id: int) -> tuple["SequenceBatch", torch.Tensor, torch.Tensor]:
        """Apply the pass's predictions (tokens/confidence [S, W], read at the predicted
        slots) and the rules; returns (the batch after the pass, slots filled [S], done [S]).

        features names what the rows use ("rule:<name>", "threshold", "stop_early"), so
        rules no row uses cost nothing."""
        in_block, predicted = inputs.in_block, inputs.predicted
        view = tokens
        if inputs.head is not predicted:  # scored rows: predictions at unmasked slots are not taken
            view = torch.where(predicted, tokens, self.tokens)
            confidence = torch.where(predicted, confidence, self.confidence)
        first_pass = self.block * self.passes_base + torch.minimum(self.block, self.passes_extra)
        scheduled_pass = (first_pass + self.block_pass).clamp_(max=self.schedule.shape[1] - 1)
        keep_masked = self.schedule.gather(1, scheduled_pass[:, None])[:, 0]
        rule_view = PassView(predicted, confidence, in_block, keep_masked, self.seed, self.passes_run)
        fill, remask = self._decide(rule_view, features)
        converged = None
        if "stop_early" in features:
            same = ((view == self.previous) | ~in_block).all(1)
            converged = self.stop_early & self.has_previous & same
            fill = torch.where(converged[:, None], predicted, fill)
            remask = remask & ~converged[:, None]

        new_tokens = torch.where(remask, mask_id, torch.where(fill, view, self.tokens))
        masked = (self.masked & ~fill) | remask
        filled = self.masked.sum(1) - masked.sum(1)
        block_pass = self.block_pass + 1
        scheduled = self.threshold.isnan() if converged is None else self.threshold.isnan() & ~converged
        passes = self.passes_base + (self.block < self.passes_extra)
        block_open = (masked & in_block).any(1) | (scheduled & (block_pass < passes))
        block = torch.where(block_open, self.block, self.block + 1)
        after = replace(
            self, tokens=new_tokens, confidence=confidence, masked=masked, block=block,
            block_pass=torch.where(block_open, block_pass, 0), passes_run=self.passes_run + 1,
            frame=self.frame.scatter(1, self.frame_columns, new_tokens),
        )
        if converged is not None:
            after = replace(after, previous=view, has_previous=block_open)
        return after, filled, block == self.num_blocks

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
            rows = ~self.threshold.isnan()[:, None]
            by_threshold = threshold_fill(view, self.threshold)
            if fill is None:
                fill, remask = by_threshold, torch.zeros_like(by_threshold)
            else:
                fill, remask = torch.where(rows, by_threshold, fill), remask & ~rows
        return fill, remask


@dataclass(frozen=True)
class PassInputs:
    in_block: torch.Tensor  # bool [S, W]
    predicted: torch.Tensor  # bool [S, W]: masked slots of the block
    head: torch.Tensor  # bool [S, W]: slots the MLM head runs at (predicted, and scored rows' slots)
    head_seq: torch.Tensor  # int64 [R]: row of each head slot, row-major order
    head_slot: torch.Tensor  # int64 [R]: its slot
    input_ids: torch.Tensor  # int64 [T]: the packed frames of the rows that run
    positions: torch.Tensor  # int64 [T]
    cu_seqlens: torch.Tensor  # int32 [rows that run + 1]
    head_rows: torch.Tensor  # int64 [R]: the packed row of each head slot


def _pad_columns(t: torch.Tensor, width: int, pad) -> torch.Tensor:
    if t.shape[1] == width:
        return t
    extra = torch.full((t.shape[0], width - t.shape[1]), pad, dtype=t.dtype, device=t.device)
    return torch.cat([t, extra], dim=1)
