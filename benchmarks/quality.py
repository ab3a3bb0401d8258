"""Quality metrics of generated texts that need no model: diversity and degeneration.

Validity and exact log-likelihood come from the reference language (benchmarks.language);
perplexity under a judge checkpoint from `judge_perplexity`.
"""
import math

import torch


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
