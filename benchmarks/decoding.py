"""Decoding the experiment's models (benchmarks/transformer.py) with the engine's exact rules.

The sweep decodes all five models, including the causal mask-predict model the engine cannot
serve (it treats every causal checkpoint as autoregressive), so it drives the models itself:
- `generate_causal`: the engine's autoregressive rules (greedy argmax, or the sample kernel's
  reference seeded with mix_seed(request seed, tokens generated)), stopping at `<eos>`;
- `mask_predict`: the engine's own batched state (`SequenceBatch`: schedule, re-masking,
  blocks) and prediction rule (`predict_slots`) fed by this model's logits, with the engine's
  vocabulary restriction; a request is its prompt and a frame size.
- `predict_frames`: the length head, a one-slot frame decoded in one pass (benchmarks/frame.py).

Greedy outputs therefore equal the engine's on the same checkpoint (tests check it), up to
fp32 rounding differences between padded and packed batches on exact ties.
"""
from dataclasses import dataclass, replace

import torch

from benchmarks.frame import MAX_SLOTS
from engine.mask_batch import SequenceBatch
from engine.mask_predict import pass_features, predict_slots
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

    The state and the rules are the engine's own (engine/mask_batch.py's SequenceBatch and
    engine/mask_predict.py's predict_slots); only the forward differs: this model reads each
    row's frame right-padded instead of packed.

    text_only: a sequence decoded one slot per pass left to right (block_length 1) stops once
    it has produced `<eos>`: its text cannot change any more (later slots only pad), so the
    words are the engine's and the later passes are saved; its passes count as the engine's."""
    seeds = seeds or [0] * len(prompts)
    params = [replace(p, length=n, length_candidates=None)
              for p, n in zip(params if isinstance(params, list) else [params] * len(prompts), frames)]
    banned = banned_mask(ids, special_ids)
    features = frozenset(f for p in params for f in pass_features(p))
    batch = SequenceBatch.build([(prompt, n, p, seed, False) for prompt, n, p, seed in zip(prompts, frames, params, seeds)],
                                (ids.cls, ids.sep, ids.mask), torch.device("cpu"))
    rows = torch.arange(len(prompts))  # the request of each row still running
    results = {}  # request -> (tokens, passes)
    early = torch.tensor([text_only and p.block_length == 1 for p in params])
    while rows.numel():
        inputs = batch.pass_inputs(features)
        tokens, confidence = batch.tokens, batch.confidence
        if inputs.head_rows.numel():
            frame = batch.frame[:, :-1]  # the last column is the batch's scratch column
            valid = torch.arange(frame.shape[1])[None, :] < batch.frame_len[:, None]
            seq, slot = inputs.head.nonzero(as_tuple=True)  # row-major, as predict_slots expects
            hidden = model.hidden_states(frame, valid)[seq, batch.first_slot[seq] + slot]
            logits = model.head(hidden).float().masked_fill(banned, float("-inf"))
            head_tokens, head_confidence = predict_slots(reference, batch, inputs, logits, features)
            tokens = tokens.masked_scatter(inputs.head, head_tokens)
            confidence = confidence.masked_scatter(inputs.head, head_confidence)
        batch, _, done = batch.after_pass(inputs, tokens, confidence, features, ids.mask)
        finished = torch.zeros(rows.numel(), dtype=torch.bool) if done is None else done
        if text_only:  # left to right: <eos> before the current block's end fixes the text
            before = torch.arange(batch.tokens.shape[1])[None, :] < batch.block_end[:, None]
            stopped = early[rows] & ((batch.tokens == ids.eos) & before & batch.valid).any(1)
            finished = finished | stopped
        for r in finished.nonzero()[:, 0].tolist():
            i = int(rows[r])
            by_rules = done is not None and bool(done[r])  # else stopped early at <eos>: the engine's count
            results[i] = (batch.tokens[r, :frames[i]].tolist(),
                          int(batch.passes_run[r]) if by_rules else params[i].iterations)
        if bool(finished.any()):
            keep = (~finished).nonzero()[:, 0]
            rows = rows[keep]
            if rows.numel():
                batch = batch.select(keep)
    out = []
    for i, n in enumerate(frames):
        tokens, passes = results[i]
        words = tokens[:tokens.index(ids.eos)] if ids.eos in tokens else list(tokens)
        out.append(Decoded(tokens=tokens, words=words, passes=passes, frame=n))
    return out


def predict_frames(model, prompts, ids, special_ids, temperature=0.0, seeds=None):
    """The length head's frame size per prompt (the largest frame when it names none)."""
    params = MaskPredictParams(length=1, iterations=1, temperature=temperature)
    heads = mask_predict(model, prompts, [1] * len(prompts), params, ids, special_ids, seeds)
    return [ids.slots_of(h.tokens[0]) or MAX_SLOTS for h in heads]
