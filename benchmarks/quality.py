"""Quality metrics of generated texts: diversity and degeneration (no model needed), validity,
length and exact likelihood under the reference language (`language_scores`), and perplexity
under a judge checkpoint (`judge_perplexity`).
"""
import math

import numpy as np
import torch

from benchmarks import stats


def distinct_n(texts, n):
    """Unique n-grams / all n-grams over the whole set (word level); 0 when there are none."""
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeated_token_rate(texts):
    """Share of words equal to the word before them: mask-predict's typical failure."""
    pairs = [(a, b) for words in (t.split() for t in texts) for a, b in zip(words, words[1:])]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else 0.0


@torch.no_grad()
def judge_perplexity(judge_model, tokenizer, prompts, continuations, device="cpu"):
    """exp(mean negative log-likelihood per continuation token) under an HF causal LM judge."""
    total_nll, total_tokens = 0.0, 0
    for prompt, continuation in zip(prompts, continuations):
        prompt_ids = tokenizer(prompt)["input_ids"] if prompt else []
        cont_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not cont_ids:
            continue
        ids = torch.tensor([prompt_ids + cont_ids], device=device)
        logits = judge_model(ids).logits[0, :-1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        targets = ids[0, 1:]
        token_lp = logprobs.gather(1, targets[:, None])[:, 0][-len(cont_ids) :]
        total_nll -= token_lp.sum().item()
        total_tokens += len(cont_ids) if prompt_ids else len(cont_ids) - 1
    return math.exp(total_nll / total_tokens) if total_tokens else float("nan")


LENGTH_STRATA = ((0, 2), (3, 5), (6, 9), (10, 15), (16, 99))
LENGTH_BINS = 33  # answer words 0..31, and 32+


def language_scores(lang, prompts, texts, references):
    """Quality of `texts` (continuations of `prompts`) under the reference language, as
    distributions: validity with its Wilson interval, validity per output-length stratum, the
    output-length histogram's total-variation distance to that of `references` (the held-out
    continuations of the same prompts), and the exact NLL per token of the valid outputs."""
    logp = lang.log_probs(texts, prompts)
    valid = np.isfinite(logp)
    words = np.array([len(t.split()) for t in texts])
    ref_words = [len(r.split()) for r in references]
    hist, ref_hist = stats.histogram(words, LENGTH_BINS), stats.histogram(ref_words, LENGTH_BINS)
    strata = {}
    for lo, hi in LENGTH_STRATA:
        inside = (words >= lo) & (words <= hi)
        strata[f"{lo}-{hi}" if hi < 99 else f"{lo}+"] = stats.proportion(int(valid[inside].sum()), int(inside.sum()))
    tokens = (words[valid] + 1).sum()
    return {
        "validity": stats.proportion(int(valid.sum()), len(texts)),
        "validity_by_length": strata,
        "mean_words": float(words.mean()) if len(words) else None,
        "reference_mean_words": float(np.mean(ref_words)) if ref_words else None,
        "length_histogram": hist,
        "reference_length_histogram": ref_hist,
        "length_tv": stats.total_variation(hist, ref_hist),
        "valid_words": int(words[valid].sum()),
        "nll_per_token_valid": float(-logp[valid].sum() / tokens) if tokens else None,
    }
