"""Decoding the experiment's models (benchmarks/transformer.py) with the engine's exact rules.

The sweep decodes all five models, including the causal mask-predict model the engine cannot
serve (it treats every causal checkpoint as autoregressive), so it drives the models itself:
- `generate_causal`: the engine's autoregressive rules (greedy argmax, or the sample kernel's
  reference seeded with mix_seed(request seed, tokens generated)), stopping at `<eos>`;
- `mask_predict`: the engine's own per-sequence state machine (`SequenceRefinement`: schedule,
  re-masking, blocks) fed by this model's logits, with the engine's vocabulary restriction and
  confidence rule; a request is its prompt and a frame size.
- `predict_frames`: the length head, a one-slot frame decoded in one pass (benchmarks/frame.py).

Greedy outputs therefore equal the engine's on the same checkpoint (tests check it), up to
fp32 rounding differences between padded and packed batches on exact ties.
"""
from dataclasses import dataclass, replace

import torch

from benchmarks.frame import MAX_SLOTS
from engine.mask_predict import SequenceRefinement
from engine.mask_schedule import SAMPLE_STREAM
from engine.params import MaskPredictParams
from engine.seeding import mix_seed
from kernels import reference


@dataclass
class Decoded:
    tokens: list  # generated ids: AR up to <eos> (excluded); mask-predict all frame slots
    words: list  # ids up to the first <eos>: the text
    passes: int  # forward passes this output took (AR: tokens generated, <eos> included)
    frame: int | None = None  # mask-predict frame size


def pad_rows(rows, pad_id):
    """Right-padded ids [B, n] and the bool mask of real tokens (by length: a model may well
    generate the padding token itself)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    lengths = torch.tensor([len(r) for r in rows])
    return ids, torch.arange(width)[None, :] < lengths[:, None]


def _draw(logits, temperature, seeds):
    """The engine's AR draw: argmax at temperature 0, else the seeded sample kernel."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    n = logits.shape[0]
    return reference.sample(logits, torch.full((n,), float(temperature)), torch.zeros(n, dtype=torch.int64),
                            torch.ones(n), torch.tensor(seeds, dtype=torch.int64))


@torch.no_grad()
def generate_causal(model, prompts, ids, temperature=0.0, seeds=None, max_tokens=None):
    """Autoregressive continuations of `<bos> prompt` until `<eos>` or the context is full."""
    seeds = seeds or [0] * len(prompts)
    context = model.size.context
    seqs = [[ids.bos, *p] for p in prompts]
    limits = [min(max_tokens or context, context - len(s)) for s in seqs]
    new = [[] for _ in prompts]
    live = [i for i in range(len(prompts)) if limits[i] > 0]
    while live:
        x, valid = pad_rows([seqs[i] + new[i] for i in live], ids.pad)
        last = valid.sum(1) - 1
        hidden = model.hidden_states(x, valid)[torch.arange(len(live)), last]
        logits = model.head(hidden).float()
        drawn = _draw(logits, temperature, [mix_seed(seeds[i], len(new[i])) for i in live]).tolist()
        still = []
        for i, token in zip(live, drawn):
            new[i].append(token)
            if token != ids.eos and len(new[i]) < limits[i]:
                still.append(i)
        live = still
    out = []
    for tokens in new:
        words = tokens[:tokens.index(ids.eos)] if ids.eos in tokens else tokens
        out.append(Decoded(tokens=words, words=words, passes=len(tokens)))
    return out


def banned_mask(ids, special_ids):
    """Bool [V]: what mask-predict never predicts, the special tokens but `<eos>` (engine rule)."""
    banned = torch.zeros(ids.vocab, dtype=torch.bool)
    banned[[i for i in special_ids if i != ids.eos]] = True
    return banned


@torch.no_grad()
def mask_predict(model, prompts, frames, params, ids, special_ids, seeds=None, text_only=False):
    """Fill frames[i] masked slots after prompts[i] with the engine's mask-predict rules;
    `params` is one MaskPredictParams or one per prompt (its length is frames[i]).

    text_only: a sequence decoded one slot per pass left to right (block_size 1) stops once
    it has produced `<eos>`: its text cannot change any more (later slots only pad), so the
    words are the engine's and the later passes are saved; its passes count as the engine's."""
    seeds = seeds or [0] * len(prompts)
    params = params if isinstance(params, list) else [params] * len(prompts)
    banned = banned_mask(ids, special_ids)
    seqs = [SequenceRefinement(replace(p, length=n, length_candidates=None), n, seed, ids.mask)
            for p, n, seed in zip(params, frames, seeds)]
    done_early = set()
    while True:
        if text_only:
            for i, s in enumerate(seqs):
                if i not in done_early and params[i].block_size == 1 and ids.eos in s.tokens[:s.block_index]:
                    done_early.add(i)
        live = [i for i, s in enumerate(seqs) if not s.finished and i not in done_early]
        if not live:
            break
        work = [i for i in live if seqs[i].slots_to_predict()]
        for i in set(live) - set(work):
            seqs[i].apply([], [], [])  # a no-op pass: nothing masked in its block
        if not work:
            continue
        rows, where, owner, slots = [], [], [], []
        for r, i in enumerate(work):
            rows.append([ids.cls, *prompts[i], *seqs[i].tokens, ids.sep])
            for s in seqs[i].slots_to_predict():
                where.append((r, 1 + len(prompts[i]) + s))
                owner.append(i)
                slots.append(s)
        x, valid = pad_rows(rows, ids.pad)
        hidden = model.hidden_states(x, valid)
        at = torch.tensor(where)
        logits = model.head(hidden[at[:, 0], at[:, 1]]).float().masked_fill(banned, float("-inf"))
        tokens, confidence = reference.confidence_argmax(logits)
        sampled = [k for k, i in enumerate(owner) if params[i].temperature > 0]
        if sampled:
            rows = torch.tensor(sampled)
            temperature = torch.tensor([float(params[owner[k]].temperature) for k in sampled])
            row_seeds = [mix_seed(seeds[owner[k]], SAMPLE_STREAM, seqs[owner[k]].passes_run, slots[k]) for k in sampled]
            drawn = reference.sample(logits[rows], temperature, torch.zeros(len(sampled), dtype=torch.int64),
                                     torch.ones(len(sampled)), torch.tensor(row_seeds, dtype=torch.int64))
            tokens[rows] = drawn
            confidence[rows] = torch.softmax(logits[rows], dim=-1).gather(1, drawn[:, None])[:, 0]
        tokens, confidence = tokens.tolist(), confidence.tolist()
        start = 0
        for i in work:  # rows are grouped by request, in `work` order
            end = start + len(seqs[i].slots_to_predict())
            seqs[i].apply(slots[start:end], tokens[start:end], confidence[start:end])
            start = end
    out = []
    for i, (s, n) in enumerate(zip(seqs, frames)):
        words = s.tokens[:s.tokens.index(ids.eos)] if ids.eos in s.tokens else list(s.tokens)
        passes = params[i].iterations if i in done_early else s.passes_run
        out.append(Decoded(tokens=list(s.tokens), words=words, passes=passes, frame=n))
    return out


def predict_frames(model, prompts, ids, special_ids, temperature=0.0, seeds=None):
    """The length head's frame size per prompt (the largest frame when it names none)."""
    params = MaskPredictParams(length=1, iterations=1, temperature=temperature)
    heads = mask_predict(model, prompts, [1] * len(prompts), params, ids, special_ids, seeds)
    return [ids.slots_of(h.tokens[0]) or MAX_SLOTS for h in heads]
