"""The test oracle: a plain loop over a HF `*ForMaskedLM` implementing the mask-predict
semantics of docs/mask-predict.md, one request and one target length at a time, no batching.

It is written from the specification (docs/mask-predict.md and the rules documented in
engine/mask_predict.py and engine/mask_schedule.py), not from the engine's code: the whole
model runs every pass, probabilities come from torch.softmax, and slots are chosen by
sorting Python tuples. Seeded draws use the torch reference sampler, the spec of ops.sample.
"""
import math
from dataclasses import dataclass

import torch

from kernels import reference

M64 = 2**64


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) % M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % M64
    return x ^ (x >> 31)


def hash_seed(seed, *keys):
    h = splitmix64(seed % M64)
    for k in keys:
        h = splitmix64(h ^ (k % M64))
    return h >> 1


SAMPLE, REMASK = 0, 1


@dataclass
class OracleResult:
    token_ids: list
    text: str
    nfe: int
    tokens_per_pass: list
    pass_texts: list
    score: float  # mean log-probability of the final tokens at the last pass


def still_masked(size, t, T, schedule):
    """How many of a block's `size` slots are masked after pass t of T."""
    if t >= T - 1:
        return 0
    if schedule == "linear":
        return math.floor(size * (T - 1 - t) / T)
    return math.floor(size * math.cos(math.pi / 2 * (t + 1) / T))


def text_of(tokenizer, tokens):
    eos = tokenizer.eos_token_id
    if eos is not None and eos in tokens:
        tokens = tokens[: tokens.index(eos)]
    return tokenizer.decode(tokens, skip_special_tokens=False)


def decode_length(model, tokenizer, prompt_ids, params, N, seed):
    """Mask-predict of N target slots after `prompt_ids`."""
    eos = tokenizer.eos_token_id
    banned = [i for i in tokenizer.all_special_ids if i != eos]
    mask = tokenizer.mask_token_id
    P = len(prompt_ids)
    tokens, confidence, masked = [mask] * N, [0.0] * N, [True] * N

    size = params.block_length or N
    blocks = [(a, min(a + size, N)) for a in range(0, N, size)]
    T = params.iterations
    passes = [T // len(blocks) + (1 if i < T % len(blocks) else 0) for i in range(len(blocks))]

    nfe, tokens_per_pass, pass_texts, log_probs = 0, [], [], None
    for (a, b), block_passes in zip(blocks, passes):
        t, previous, converged = 0, None, False
        # scheduled: exactly block_passes passes; threshold: until the block is filled
        while not converged and (t < block_passes if params.threshold is None else True in masked[a:b]):
            x = [tokenizer.cls_token_id] + list(prompt_ids) + tokens + [tokenizer.sep_token_id]
            with torch.no_grad():
                logits = model(torch.tensor([x])).logits[0, 1 + P : 1 + P + N].float()
            logits[:, banned] = float("-inf")
            probs = torch.softmax(logits, dim=-1)
            log_probs = torch.log_softmax(logits, dim=-1)
            masked_before = masked.count(True)

            prediction = list(tokens)
            for i in range(a, b):
                if not masked[i]:
                    continue
                if params.temperature == 0:
                    token = int(torch.argmax(logits[i]))
                else:
                    token = int(reference.sample(
                        logits[i : i + 1], torch.tensor([float(params.temperature)]),
                        torch.tensor([params.top_k]), torch.tensor([float(params.top_p)]),
                        torch.tensor([hash_seed(seed, SAMPLE, nfe, i)]),
                    )[0])
                prediction[i] = token
                confidence[i] = float(probs[i, token])
            predicted = [i for i in range(a, b) if masked[i]]

            if params.stop_early and previous == prediction[a:b]:
                converged = True
                fill = predicted
                remask = []
            elif params.threshold is not None:
                fill = [i for i in predicted if confidence[i] >= params.threshold]
                if not fill:
                    fill = [sorted(predicted, key=lambda i: (-confidence[i], i))[0]]
                remask = []
            else:
                n = still_masked(b - a, t, block_passes, params.schedule)
                if params.remask == "commit":
                    k = len(predicted) - n
                    fill = sorted(predicted, key=lambda i: (-confidence[i], i))[:k]
                    remask = []
                else:
                    fill = predicted
                    if params.remask == "random":
                        remask = sorted(range(a, b), key=lambda i: (hash_seed(seed, REMASK, nfe, i), i))[:n]
                    else:
                        remask = sorted(range(a, b), key=lambda i: (confidence[i], i))[:n]
            previous = prediction[a:b]
            for i in fill:
                tokens[i], masked[i] = prediction[i], False
            for i in remask:
                tokens[i], masked[i] = mask, True

            t += 1
            nfe += 1
            tokens_per_pass.append(masked_before - masked.count(True))
            pass_texts.append(text_of(tokenizer, tokens))

    score = sum(float(log_probs[i, tokens[i]]) for i in range(N)) / N
    return OracleResult(tokens, text_of(tokenizer, tokens), nfe, tokens_per_pass, pass_texts, score)


def hf_mask_predict(model, tokenizer, prompt_ids, params, seed=None):
    """All length candidates, each decoded alone; the best mean log-probability wins (first
    on ties). Returns (best OracleResult, every candidate's result)."""
    seed = params.seed if seed is None else seed
    results = [decode_length(model, tokenizer, prompt_ids, params, n, seed) for n in params.lengths]
    scores = [r.score for r in results]
    return results[scores.index(max(scores))], results
