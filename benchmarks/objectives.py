"""The five trained models: attention structure x training objective, and the batches they learn from.

The 2x2 design plus BERT's recipe (folder names keep the bundled ones: "gpt2" marks the causal
stack, "bert" the bidirectional one; all five are the same `benchmarks.transformer.Transformer`):

    model       attention       objective
    ar-gpt2     causal          next token: `<bos> sentence <eos>`, every position predicts the next
    ar-bert     bidirectional   next token in the answer frame: the answer's slots from j on are
                                masked (j uniform), the loss is on slot j
    cmlm-gpt2   causal          uniform-rate masking of the answer frame (CMLM / masked diffusion)
    cmlm-bert   bidirectional   uniform-rate masking of the answer frame (CMLM / masked diffusion)
    mlm-bert    bidirectional   BERT's 15% masking of the answer frame (80% [MASK], 10% random, 10% kept)

The answer frame (every model but ar-gpt2; benchmarks/frame.py): `[CLS] prompt answer [SEP]`. A
sentence of n words is cut after k words; the answer is the n - k remaining words, then `<eos>`
padding up to the next multiple of 4 slots (at least one `<eos>`). The frame's size tells a
bidirectional model the answer's length to within 4 words, so the bidirectional models also
learn a length head: the one-slot frame `[CLS] prompt [MASK] [SEP]` predicts the frame size as a
length token (loss weight LENGTH_LOSS_WEIGHT, as Mask-Predict weights its length loss; a random
LENGTH_ROW_FRACTION of the training examples carry it, all held-out ones); decoding asks it
first, then fills a frame of that size. The cut k is uniform over the sentence's valid cuts (the answer fits the
largest frame and the whole fits the context), and each example is weighted by its sentence's
number of valid cuts: then every (prompt, answer) pair appears in proportion to its probability
under the language, so a model's conditionals are the language's exactly (without the weight,
short sentences, having fewer cuts, would be over-represented after every prompt: the
uniform-cut recipe biases a masked LM towards short answers).

Losses are per-token estimates of a negative log-likelihood where the objective has one: for
next-token, sum of -log p over the sentence's tokens; for uniform masking with m of b slots
masked, b/m times the masked slots' sum (the masked-diffusion ELBO: its expectation is the
model's negative log-likelihood averaged over uniformly random unmasking orders); for ar-bert,
b times slot j's loss (its expectation is the left-to-right sum). Each is divided by the
example's tokens (words + one `<eos>`), the grammar's token count, so held-out losses compare
with the grammar's exact NLL. BERT's 15% loss is the mean over the masked slots (no likelihood).
The length head's loss is -log q(frame size | prompt), per example; with it a bidirectional
model has a full likelihood, -log q(size | prompt) - log q(answer | prompt, size), comparable
with a causal model's.
"""
from dataclasses import dataclass, replace

import numpy as np
import torch

from benchmarks.corpus import FIRST_WORD_ID
from benchmarks.frame import ANSWER_SLOTS, LENGTH_TOKENS, MAX_ANSWER_WORDS, answer_slots
from benchmarks.tokenizer import SPECIALS

LENGTH_LOSS_WEIGHT = 0.1
LENGTH_ROW_FRACTION = 0.25  # examples that also train the length head (its rows repeat the prompt)
OBJECTIVES = ("next_token", "uniform", "mlm15")
MLM_RATE = 0.15


@dataclass(frozen=True)
class ModelSpec:
    name: str
    causal: bool
    objective: str

    @property
    def framed(self):
        """Whether the model learns the answer frame (all but the causal next-token model)."""
        return not (self.causal and self.objective == "next_token")

    @property
    def length_head(self):
        """Bidirectional framed models see the frame's size, so they learn to predict it; a
        causal one cannot see it and always decodes in the largest frame."""
        return self.framed and not self.causal


MODELS = {spec.name: spec for spec in (
    ModelSpec("ar-gpt2", causal=True, objective="next_token"),
    ModelSpec("cmlm-bert", causal=False, objective="uniform"),
    ModelSpec("ar-bert", causal=False, objective="next_token"),
    ModelSpec("cmlm-gpt2", causal=True, objective="uniform"),
    ModelSpec("mlm-bert", causal=False, objective="mlm15"),
)}


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    cls: int
    sep: int
    mask: int
    bos: int
    eos: int
    vocab: int

    @property
    def first_length(self):
        """Id of the first length token; the words are FIRST_WORD_ID .. first_length - 1."""
        return self.vocab - len(LENGTH_TOKENS)

    def length_id(self, slots):
        return self.first_length + ANSWER_SLOTS.index(slots)

    def slots_of(self, token_id):
        """The frame size a length-token id names, None for any other id."""
        i = token_id - self.first_length
        return ANSWER_SLOTS[i] if 0 <= i < len(ANSWER_SLOTS) else None

    @classmethod
    def of(cls, vocab_size):
        ids = {name: i for i, name in enumerate(SPECIALS)}
        return cls(pad=ids["pad_token"], cls=ids["cls_token"], sep=ids["sep_token"], mask=ids["mask_token"],
                   bos=ids["bos_token"], eos=ids["eos_token"], vocab=vocab_size)

    def hf(self):
        return {"pad_token_id": self.pad, "bos_token_id": self.bos, "eos_token_id": self.eos,
                "mask_token_id": self.mask}


def frame_fits(prompt_words, answer_words, context):
    return answer_words <= MAX_ANSWER_WORDS and 2 + prompt_words + answer_slots(answer_words) <= context


def valid_cuts(n_words, context):
    """The cuts k (prompt = first k words) whose frame fits."""
    return [k for k in range(max(0, n_words - MAX_ANSWER_WORDS), n_words + 1)
            if frame_fits(k, n_words - k, context)]


def frame_lengths(prompt_words, context):
    """Answer word counts whose frame fits after a prompt of `prompt_words` words."""
    return [n for n in range(MAX_ANSWER_WORDS + 1) if frame_fits(prompt_words, n, context)]


def allowed_answer_lengths(spec: ModelSpec, prompt_words, answer_words, context):
    """Answer word counts the model's training distribution allows after a prompt of
    `prompt_words` words, given the true answer's length: its floor is the grammar's NLL
    conditioned on these (benchmarks/likelihood.py). A bidirectional framed model also sees
    the frame, so it conditions on the answer's bucket."""
    if not spec.framed:
        return [n for n in range(context) if prompt_words + n + 2 <= context]
    fits = frame_lengths(prompt_words, context)
    if spec.causal:
        return fits
    bucket = answer_slots(answer_words)
    return [n for n in fits if answer_slots(n) == bucket]


@dataclass
class Batch:
    """Sequences packed into rows of the context's length (first fit, in order; several per row,
    kept apart by the attention mask). The loss is sum(weight * CE at the targets) / norm."""

    input_ids: torch.Tensor  # [R, n]
    segments: torch.Tensor  # [R, n]: 1, 2, ... for each sequence of the row, 0 on padding
    positions: torch.Tensor  # [R, n]: position within its sequence
    targets: torch.Tensor  # [R, n], -100 where nothing is predicted
    weights: torch.Tensor  # [R, n] float: the answer's targets
    norm: float
    length_weights: torch.Tensor  # [R, n] float: the length slots' targets
    length_norm: float
    examples: list  # (sentence ids, cut k or None, split weight) per example: what the floor needs
    seq_lens: list

    @property
    def tokens(self):
        return sum(self.seq_lens)

    def to(self, device):
        tensors = ("input_ids", "segments", "positions", "targets", "weights", "length_weights")
        return replace(self, **{name: getattr(self, name).to(device) for name in tensors})


def _pack(rows, targets, weights, norms, pad_id, examples, width, is_length=None):
    """First-fit packing of sequences (each <= width) into rows of `width` tokens; `is_length`
    marks the length-head sequences, whose weights go to length_weights; norms: (answer, length)."""
    is_length = is_length or [False] * len(rows)
    placed, fill = [], []  # (row, start) per sequence; tokens used per row
    for r in rows:
        row = next((i for i, used in enumerate(fill) if used + len(r) <= width), None)
        if row is None:
            row = len(fill)
            fill.append(0)
        placed.append((row, fill[row]))
        fill[row] += len(r)
    shape = (len(fill), max(fill))
    ids = torch.full(shape, pad_id, dtype=torch.long)
    seg = torch.zeros(shape, dtype=torch.long)
    pos = torch.zeros(shape, dtype=torch.long)
    tgt = torch.full(shape, -100, dtype=torch.long)
    wts, length_wts = torch.zeros(shape), torch.zeros(shape)
    count = [0] * len(fill)
    for r, t, w, length, (row, start) in zip(rows, targets, weights, is_length, placed):
        span = slice(start, start + len(r))
        count[row] += 1
        ids[row, span], seg[row, span] = torch.tensor(r), count[row]
        pos[row, span] = torch.arange(len(r))
        tgt[row, span] = torch.tensor(t)
        (length_wts if length else wts)[row, span] = torch.tensor(w, dtype=torch.float32)
    return Batch(ids, seg, pos, tgt, wts, norms[0], length_wts, norms[1], examples, [len(r) for r in rows])


def next_token_batch(sentences, ids: SpecialIds, context):
    """`<bos> s <eos>`: position i predicts token i + 1; every token counts once. Sentences
    longer than the context are left out (allowed_answer_lengths accounts for it)."""
    sentences = [s for s in sentences if len(s) + 2 <= context]
    rows = [[ids.bos, *s, ids.eos] for s in sentences]
    targets = [r[1:] + [-100] for r in rows]
    weights = [[1.0] * (len(r) - 1) + [0.0] for r in rows]
    norm = float(sum(len(s) + 1 for s in sentences))
    return _pack(rows, targets, weights, (norm, 0.0), ids.pad, [(s, None, 1.0) for s in sentences], context)


def framed_batch(spec: ModelSpec, sentences, ids: SpecialIds, rng: np.random.Generator, context, cuts=None):
    """The answer-frame batch of `spec`'s objective; `cuts` fixes the prompt lengths (held-out
    evaluation), else each is drawn uniformly from the sentence's valid cuts."""
    rows, targets, weights, norm, examples, is_length, length_norm = [], [], [], 0.0, [], [], 0.0
    for i, s in enumerate(sentences):
        options = valid_cuts(len(s), context)
        if not options:  # weight 0: too long for any frame
            continue
        k = options[rng.integers(len(options))] if cuts is None else cuts[i]
        answer_words = len(s) - k
        b = answer_slots(answer_words)
        answer = np.array([*s[k:], *[ids.eos] * (b - answer_words)])
        w = float(len(options))  # the split-point weight (module docstring)
        examples.append((s, k, w))
        inp, tgt, wt = answer.copy(), np.full(b, -100), np.zeros(b)
        if spec.objective == "uniform":
            m = int(rng.integers(1, b + 1))
            chosen = rng.permutation(b)[:m]
            inp[chosen], tgt[chosen], wt[chosen] = ids.mask, answer[chosen], w * b / m
            norm += w * (answer_words + 1)
        elif spec.objective == "next_token":
            j = int(rng.integers(b))
            inp[j:], tgt[j], wt[j] = ids.mask, answer[j], w * b
            norm += w * (answer_words + 1)
        else:  # BERT's 15%: at least one slot
            chosen = np.flatnonzero(rng.random(b) < MLM_RATE)
            if chosen.size == 0:
                chosen = rng.integers(b, size=1)
            action = rng.random(chosen.size)
            replaced = np.where(action < 0.8, ids.mask, inp[chosen])
            random_words = rng.integers(FIRST_WORD_ID, ids.first_length, size=chosen.size)
            inp[chosen] = np.where((action >= 0.8) & (action < 0.9), random_words, replaced)
            tgt[chosen], wt[chosen] = answer[chosen], w
            norm += w * chosen.size
        head = [ids.cls, *s[:k]]
        rows.append(head + inp.tolist() + [ids.sep])
        targets.append([-100] * len(head) + tgt.tolist() + [-100])
        weights.append([0.0] * len(head) + wt.tolist() + [0.0])
        is_length.append(False)
        if spec.length_head and (cuts is not None or rng.random() < LENGTH_ROW_FRACTION):
            rows.append(head + [ids.mask, ids.sep])
            targets.append([-100] * len(head) + [ids.length_id(b), -100])
            weights.append([0.0] * len(head) + [w, 0.0])
            is_length.append(True)
            length_norm += w
    return _pack(rows, targets, weights, (norm, length_norm), ids.pad, examples, context, is_length)


def make_batch(spec: ModelSpec, sentences, ids: SpecialIds, rng, context, cuts=None):
    if not spec.framed:
        return next_token_batch(sentences, ids, context)
    return framed_batch(spec, sentences, ids, rng, context, cuts)


def batch_losses(model, batch: Batch):
    """(answer loss, length loss or None) of the module docstring; the head runs only at the
    target positions."""
    hidden = model.hidden_states(batch.input_ids, segments=batch.segments, positions=batch.positions)
    rows = batch.targets != -100
    logits = model.head(hidden[rows])
    ce = torch.nn.functional.cross_entropy(logits.float(), batch.targets[rows], reduction="none")
    answer = (ce * batch.weights[rows]).sum() / batch.norm
    length = (ce * batch.length_weights[rows]).sum() / batch.length_norm if batch.length_norm else None
    return answer, length


def batch_loss(model, batch: Batch):
    """The training loss: the answer's, plus the length head's weighted as in Mask-Predict."""
    answer, length = batch_losses(model, batch)
    return answer if length is None else answer + LENGTH_LOSS_WEIGHT * length
