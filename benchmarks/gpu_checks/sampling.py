"""Check and time `sample` and `confidence_argmax` at LLM vocabulary sizes.

Baselines are what an eager engine runs: torch.argmax + torch.softmax for the confidence,
and softmax + sort-based top-k / top-p + torch.multinomial for sampling. Bytes are the
logits read once plus the per-row parameters and outputs, the minimum any implementation
must move (the sampler streams each row several times, from L2 when it can). Flops are 0:
nothing here runs on the tensor cores.

`sample` must draw the reference's tokens (`draws_agree`), so its error is the fraction of
rows that disagree, with tolerance 0.
"""
import torch

import kernels
from kernels import reference

from ..kernel_cases import SAMPLING
from . import rel_err, result_row, tolerance

TOP_P_SLACK = 1e-4  # relative: how far exp rounding may move a top-p cut, and more


def draws_agree(logits, temperature, top_k, top_p, seeds, tokens, slack=TOP_P_SLACK):
    """Per row, whether `tokens` is what `kernels.reference.sample` allows.

    The top-k cut and the draw are exact, but the top-p cut sums exp() values that a GPU (or
    numpy, in the interpreter) may round one ulp away from torch's, so where moving top_p by
    `slack` moves the cut, the row only has to draw a token the looser cut allows. Every
    other row must draw the reference's token exactly.
    """
    filtered = top_p < 1.0
    tight = reference.top_k_top_p_mask(logits, temperature, top_k, torch.where(filtered, top_p * (1 - slack), top_p))
    loose = reference.top_k_top_p_mask(logits, temperature, top_k, torch.where(filtered, top_p * (1 + slack), top_p))
    ambiguous = (temperature > 0) & (tight != loose).any(dim=1)
    expected = reference.sample(logits, temperature, top_k, top_p, seeds)
    allowed = loose.gather(1, tokens[:, None].long())[:, 0]
    return torch.where(ambiguous, allowed, tokens == expected)


def torch_sample(logits, temperature, top_k, top_p):
    """Eager sampling as engines usually write it: sort once, mask the sorted row, multinomial."""
    x = logits.float() / temperature.clamp_min(1e-6)[:, None]
    vocab = x.shape[1]
    sorted_x, order = x.sort(dim=-1, descending=True)
    k = torch.where((top_k <= 0) | (top_k > vocab), vocab, top_k)
    ranks = torch.arange(vocab, device=x.device)
    sorted_x = sorted_x.masked_fill(ranks[None, :] >= k[:, None], float("-inf"))
    probs = torch.softmax(sorted_x, dim=-1)
    before = probs.cumsum(dim=-1) - probs
    probs = probs.masked_fill(before >= top_p[:, None], 0.0)
    drawn = order.gather(1, torch.multinomial(probs, 1))[:, 0]
    return torch.where(temperature > 0, drawn, logits.argmax(dim=-1))


def _params(batch, device, temperature, top_k, top_p):
    seeds = torch.randint(-(2**63), 2**63 - 1, (batch,), dtype=torch.int64, device=device)
    return (torch.full((batch,), temperature, device=device), torch.full((batch,), top_k, device=device),
            torch.full((batch,), top_p, device=device), seeds)


def _confidence_row(logits, dtype, shape, timer):
    batch = logits.shape[0]
    token, prob = kernels.confidence_argmax(logits)
    ref_token, ref_prob = reference.confidence_argmax(logits)
    err = rel_err(prob, ref_prob)
    tol = tolerance(torch.float32)  # the probability is computed and returned in fp32

    def baseline():
        return logits.argmax(dim=-1), torch.softmax(logits.float(), dim=-1).amax(dim=-1)

    return result_row(
        "confidence_argmax", shape, dtype, err, tol, lambda: kernels.confidence_argmax(logits),
        "argmax + softmax", baseline, timer, nbytes=logits.numel() * logits.element_size() + batch * (8 + 4),
        ok=torch.equal(token, ref_token) and err <= tol,
    )


def _sample_row(logits, dtype, shape, name, params, timer):
    batch = logits.shape[0]
    out = kernels.sample(logits, *params)
    mismatch = 1 - draws_agree(logits, *params, out).float().mean().item()
    temperature, top_k, top_p, _ = params
    return result_row(
        name, shape, dtype, mismatch, 0.0, lambda: kernels.sample(logits, *params),
        "softmax + sort + multinomial", lambda: torch_sample(logits, temperature, top_k, top_p), timer,
        # logits once; temperature, top_k, top_p, seed in; the token out
        nbytes=logits.numel() * logits.element_size() + batch * (4 + 8 + 4 + 8 + 8),
    )


def check(device, dtype, quick, timer):
    rows = []
    for batch, vocab in (SAMPLING.quick if quick else SAMPLING.gpu):
        shape = f"[{batch}, {vocab}]"
        logits = (torch.randn(batch, vocab, device=device) * 4).to(dtype)
        rows.append(_confidence_row(logits, dtype, shape, timer))
        rows.append(_sample_row(logits, dtype, shape, "sample(T=1)", _params(batch, device, 1.0, 0, 1.0), timer))
        rows.append(_sample_row(logits, dtype, shape, "sample(T=.8,k=50,p=.9)",
                                _params(batch, device, 0.8, 50, 0.9), timer))
        rows.append(_sample_row(logits, dtype, shape, "sample(T=1,p=.95)", _params(batch, device, 1.0, 0, 0.95),
                                timer))
    return rows
