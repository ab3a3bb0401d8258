"""The math of lossless speculative sampling: distributions, seeded draws, the rejection rule.

Distributions. `sampling_probs` turns logits rows into the distribution the autoregressive
sampler draws from (kernels.reference.sample): softmax(logits / T) restricted to
top_k_top_p_mask and renormalised. The target's p at a drafted position and a draft
model's q for a sampled draft slot are both made this way, with the request's parameters.

Rule (Leviathan et al. 2023; Chen et al. 2023). At a drafted position with target p,
draft q and draft token d ~ q: accept d with probability min(1, p(d) / q(d)); on rejection
emit a draw from the residual norm(max(0, p - q)) and stop. The emitted token is then
distributed exactly as p: P(emit x) = min(p(x), q(x)) + (1 - sum_y min(p(y), q(y))) *
max(0, p(x) - q(x)) / sum_y max(0, p(y) - q(y)) = p(x). This holds position after position
as long as, given the tokens before it, a draft token is a draw from the q it is tested
with; the drafters keep that true (engine/speculative/masked_drafter.py explains how).

Seeds. Every draw of a request depends only on its seed, the output position n it decides
(tokens generated before it) and a stream: mix_seed(seed, n, stream) (engine/seeding.py),
with one stream each for the draft draw, the acceptance uniform and the residual draw.
The target's own draws (the token after the last accepted draft, or at a step without
drafts) use the autoregressive sampler's seed mix_seed(seed, n) and its kernel.
"""
import numpy as np
import torch

from engine.seeding import MASK64, mix_seeds
from kernels.reference import top_k_top_p_mask, uniform_noise

DRAFT_STREAM, ACCEPT_STREAM, RESIDUAL_STREAM = 1, 2, 3


def draw_seeds(requests, positions, stream: int, device) -> torch.Tensor:
    """int64 [R] seeds mix_seed(request seed, output position, stream), one per row."""
    seeds = np.fromiter((r.seed & MASK64 for r in requests), np.uint64, len(requests))
    return torch.from_numpy(mix_seeds(seeds, np.asarray(positions, dtype=np.int64), stream)).to(device)


def sampling_probs(logits, temperature, top_k, top_p) -> torch.Tensor:
    """fp32 [R, V]: the distribution each row is sampled from (temperature > 0 rows)."""
    allowed = top_k_top_p_mask(logits, temperature, top_k, top_p)
    scaled = logits.float() / temperature.clamp_min(1e-6)[:, None]
    return torch.softmax(scaled.masked_fill(~allowed, float("-inf")), dim=-1)


def draw(probs: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """One token per row drawn from probs [R, V] (Gumbel-max over log probs), int64 [R]."""
    gumbel = -torch.log(-torch.log(uniform_noise(seeds, probs.shape[1])))
    return (probs.log() + gumbel).argmax(dim=-1)


def uniforms(seeds: torch.Tensor) -> torch.Tensor:
    """One uniform in (0, 1) per seed, fp32 [R]."""
    return uniform_noise(seeds, 1)[:, 0]


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)) per row; p itself where that is empty (p <= q everywhere can only
    reject through rounding, and then p is the right law)."""
    residual = (p - q).clamp_min(0)
    mass = residual.sum(dim=-1, keepdim=True)
    return torch.where(mass > 0, residual / mass.clamp_min(1e-30), p)


def rejection_sample(p, q, draft_tokens, accept_seeds, residual_seeds):
    """The rule at R drafted positions, each row independently: (accepted bool [R], the
    residual token int64 [R] to emit where a row is rejected)."""
    tokens = draft_tokens[:, None]
    p_d, q_d = p.gather(1, tokens)[:, 0], q.gather(1, tokens)[:, 0]
    accepted = uniforms(accept_seeds) * q_d < p_d  # u < p/q, i.e. probability min(1, p/q)
    return accepted, draw(residual_distribution(p, q), residual_seeds)
