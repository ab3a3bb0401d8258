"""How far each trained model is from the best possible one: exact floors from the grammar.

Every quantity is a negative log-likelihood in nats of held-out (prompt, answer) pairs, summed
over the answer's tokens (words + one `<eos>`) and reported per token, beside the grammar's
exact value of the same quantity (the floor; model minus floor estimates a KL divergence):

- `causal_nll`: a causal next-token model's -log q(answer <eos> | prompt).
- `left_to_right_nll`: a framed model's any-order NLL with the slots revealed left to right:
  sum over slots j of -log q(slot j | prompt, slots < j, slots >= j masked). Its floor is the
  grammar's NLL of the answer given the prompt and what the frame tells the model (the answer's
  length bucket for a bidirectional model; see objectives.allowed_answer_lengths). The slots
  after the first `<eos>` are certain given the answer, so the sum over all slots has the same
  floor.
- `length_head_nll`: a bidirectional framed model's -log q(frame size | prompt); added to the
  left-to-right NLL it makes a likelihood of the answer given the prompt alone.
- `single_mask_loss`: one slot masked, every other slot and the prompt visible:
  -log q(slot | rest), against the exact Bayes optimum -log p(slot | rest) computed by scoring
  every vocabulary token at that slot with the grammar (brute force over the vocabulary).
- `objective_floors`: the floors of a training objective's held-out losses (train.py logs them).
- `sampling_nll_causal`, `sampling_nll_left_to_right`: -log of a sample's probability under the
  (tempered) sampler that drew it, whose mean estimates the sampler's entropy: the x axis of
  the report's quality-entropy frontier.

`model` is any callable (input_ids [B, n], valid [B, n]) -> logits [B, n, V], such as
`benchmarks.transformer.Transformer`.
"""
import math

import numpy as np
import torch

from benchmarks.corpus import ids_to_text
from benchmarks.decoding import pad_rows
from benchmarks.frame import answer_slots
from benchmarks.objectives import allowed_answer_lengths, frame_lengths

CHUNK_ROWS = 1024


def conditional_floor(lang, spec, pairs, context):
    """Exact -log p(answer | prompt, answer length allowed by spec's training) per pair."""
    prompts = [ids_to_text(lang, p) for p, _ in pairs]
    answers = [ids_to_text(lang, a) for _, a in pairs]
    logp = lang.log_probs(answers, prompts)
    lengths = lang.continuation_lengths(prompts)
    out = np.empty(len(pairs))
    for i, (p, a) in enumerate(pairs):
        allowed = [n for n in allowed_answer_lengths(spec, len(p), len(a), context) if n < lengths.shape[1]]
        out[i] = -(logp[i] - math.log(lengths[i, allowed].sum()))
    return out


def answer_tokens(pairs):
    return np.array([len(a) + 1 for _, a in pairs], dtype=np.float64)


def length_floor(lang, pairs, context):
    """Exact -log p(the answer's frame size | prompt, answer lengths the training allows)."""
    prompts = [ids_to_text(lang, p) for p, _ in pairs]
    lengths = lang.continuation_lengths(prompts)
    out = np.empty(len(pairs))
    for i, (p, a) in enumerate(pairs):
        fits = [n for n in frame_lengths(len(p), context) if n < lengths.shape[1]]
        same = [n for n in fits if answer_slots(n) == answer_slots(len(a))]
        out[i] = -math.log(lengths[i, same].sum() / lengths[i, fits].sum())
    return out


def objective_floors(lang, spec, batches, context):
    """Floors of a held-out objective's (answer loss per token, length loss per example): None
    where the loss is no NLL (BERT's 15%) or the model has no length head."""
    examples = [e for b in batches for e in b.examples]
    pairs = [(s[:k or 0], s[k or 0:]) for s, k, _ in examples]
    weights = np.array([w for _, _, w in examples])
    answer = None
    if spec.objective != "mlm15":
        floor = conditional_floor(lang, spec, pairs, context)
        answer = float((weights * floor).sum() / (weights * answer_tokens(pairs)).sum())
    length = None
    if spec.length_head:
        length = float((weights * length_floor(lang, pairs, context)).sum() / weights.sum())
    return answer, length


@torch.no_grad()
def _score_rows(model, rows, positions, targets, pad_id, banned=None, temperature=1.0):
    """-log q(target at position) for each padded row, in chunks; `banned` tokens (bool [V])
    are removed from the softmax and the logits divided by `temperature` first."""
    out = []
    for i in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[i:i + CHUNK_ROWS]
        ids, valid = pad_rows(chunk, pad_id)
        logits = model(ids, valid)
        picked = logits[torch.arange(len(chunk)), torch.tensor(positions[i:i + CHUNK_ROWS])].float()
        if banned is not None:
            picked = picked.masked_fill(banned, float("-inf"))
        logp = torch.log_softmax(picked / temperature, dim=-1)
        out.append(-logp.gather(1, torch.tensor(targets[i:i + CHUNK_ROWS])[:, None])[:, 0])
    return torch.cat(out).numpy().astype(np.float64)


@torch.no_grad()
def causal_nll(model, pairs, ids):
    """Per pair, -log q(answer <eos> | <bos> prompt) of a causal next-token model."""
    out = np.zeros(len(pairs))
    for i in range(0, len(pairs), CHUNK_ROWS):
        chunk = pairs[i:i + CHUNK_ROWS]
        x, valid = pad_rows([[ids.bos, *p, *a, ids.eos] for p, a in chunk], ids.pad)
        logp = torch.log_softmax(model(x, valid).float(), dim=-1)
        for j, (p, a) in enumerate(chunk):
            t = torch.arange(len(p) + 1, len(p) + len(a) + 2)  # answer tokens and <eos>
            out[i + j] = -logp[j, t - 1, x[j, t]].sum().item()
    return out


def _framed(prompt, slots, ids):
    return [ids.cls, *prompt, *slots, ids.sep]


def padded_answer(answer, ids):
    """The answer's frame slots: its words, then <eos> up to its bucket's size."""
    return [*answer, *[ids.eos] * (answer_slots(len(answer)) - len(answer))]


def left_to_right_nll(model, pairs, ids):
    """Per pair, the any-order NLL of the answer's frame with slots revealed left to right."""
    rows, positions, targets, owner = [], [], [], []
    for i, (p, a) in enumerate(pairs):
        slots = padded_answer(a, ids)
        for j in range(len(slots)):
            rows.append(_framed(p, slots[:j] + [ids.mask] * (len(slots) - j), ids))
            positions.append(1 + len(p) + j)
            targets.append(slots[j])
            owner.append(i)
    return _per_pair(_score_rows(model, rows, positions, targets, ids.pad), owner, len(pairs))


def _per_pair(values, owner, n):
    return np.bincount(np.array(owner), weights=values, minlength=n)


def single_mask_loss(model, lang, pairs, ids, context, seed=0):
    """(model, Bayes optimum) arrays: for each pair, one slot of its frame drawn uniformly,
    masked alone; -log q and the exact -log p of the slot's token given everything else."""
    rng = np.random.default_rng(seed)
    rows, positions, targets, bayes = [], [], [], []
    candidates = [ids.eos] + list(range(ids.first_length - len(lang.words), ids.first_length))
    for p, a in pairs:
        slots = padded_answer(a, ids)
        j = int(rng.integers(len(slots)))
        rows.append(_framed(p, slots[:j] + [ids.mask] + slots[j + 1:], ids))
        positions.append(1 + len(p) + j)
        targets.append(slots[j])
        bayes.append(_bayes_single_mask(lang, p, slots, j, candidates, ids, context))
    return _score_rows(model, rows, positions, targets, ids.pad), np.array(bayes)


def _bayes_single_mask(lang, prompt, slots, j, candidates, ids, context):
    """-log p(slots[j] | prompt, the other slots, the frame) by brute force over the vocabulary:
    a filling is possible when the slots hold words, then only <eos>, with the answer's length
    in the frame's bucket; its probability is the grammar's probability of the sentence."""
    texts, keep = [], []
    for v in candidates:
        filled = slots[:j] + [v] + slots[j + 1:]
        n = filled.index(ids.eos) if ids.eos in filled else len(filled)
        if n == len(filled) or any(t != ids.eos for t in filled[n:]) or answer_slots(n) != len(slots):
            continue
        if 2 + len(prompt) + len(slots) > context:
            continue
        texts.append(ids_to_text(lang, [*prompt, *filled[:n]]))
        keep.append(v)
    logp = lang.log_probs(texts)
    true = logp[keep.index(slots[j])]
    finite = logp[np.isfinite(logp)]
    top = finite.max()
    return -(true - top - math.log(np.exp(finite - top).sum()))


def length_head_nll(model, pairs, ids):
    """Per pair, -log q(the answer's frame size | prompt) from the length slot."""
    rows = [[ids.cls, *p, ids.mask, ids.sep] for p, _ in pairs]
    positions = [1 + len(p) for p, _ in pairs]
    targets = [ids.length_id(answer_slots(len(a))) for _, a in pairs]
    return _score_rows(model, rows, positions, targets, ids.pad)


@torch.no_grad()
def sampling_nll_causal(model, prompts, outputs, ids, temperature):
    """Per output, -log of its probability under the sampler that drew it: the causal model's
    softmax(logits / T) over the whole vocabulary at each generated token (`<eos>` included when
    generated). Averaged per token over samples it estimates the sampler's entropy."""
    out = np.zeros(len(prompts))
    for i in range(0, len(prompts), CHUNK_ROWS):
        seqs = [[ids.bos, *p, *o] for p, o in zip(prompts[i:i + CHUNK_ROWS], outputs[i:i + CHUNK_ROWS])]
        x, valid = pad_rows(seqs, ids.pad)
        logp = torch.log_softmax(model(x, valid).float() / temperature, dim=-1)
        for j, (p, o) in enumerate(zip(prompts[i:i + CHUNK_ROWS], outputs[i:i + CHUNK_ROWS])):
            t = torch.arange(len(p) + 1, len(p) + 1 + len(o))
            out[i + j] = -logp[j, t - 1, x[j, t]].sum().item()
    return out


def sampling_nll_left_to_right(model, prompts, slots, ids, banned, temperature, length_head=True):
    """Per output of left-to-right mask-predict sampling (one slot per pass): -log of the path's
    probability, the length head's draw (when used) and each slot up to the first `<eos>`, all
    under softmax(restricted logits / T) as the engine samples them (later slots do not change
    the text, so they are summed out)."""
    rows, positions, targets, owner = [], [], [], []
    for i, (p, s) in enumerate(zip(prompts, slots)):
        if length_head:
            rows.append([ids.cls, *p, ids.mask, ids.sep])
            positions.append(1 + len(p))
            targets.append(ids.length_id(len(s)))
            owner.append(i)
        end = s.index(ids.eos) + 1 if ids.eos in s else len(s)
        for j in range(end):
            rows.append(_framed(p, s[:j] + [ids.mask] * (len(s) - j), ids))
            positions.append(1 + len(p) + j)
            targets.append(s[j])
            owner.append(i)
    scores = _score_rows(model, rows, positions, targets, ids.pad, banned=banned, temperature=temperature)
    return _per_pair(scores, owner, len(prompts))
