"""Turns the logits of the requests that sample this step into their next tokens.

The runner hands over the logits of the sampling rows and their argmax (computed beside the
LM head, inside the CUDA graph when there is one). An all-greedy step takes the argmax as it
is; otherwise per-row parameters go to the backend's `sample` kernel. The seed of a row at a
step is mix_seed(request seed, tokens generated so far) (engine/seeding.py), so a seeded
request draws the same tokens whatever else shares its batch. Until min_tokens are
generated, the end-of-sequence and stop tokens are masked out.

Speculative decoding gives one request several rows per step: `offsets[i]` says how many
tokens come before row i's token in that step (row i decides output token
num_generated + offsets[i]), which its seed and the min_tokens ban follow.
"""
import numpy as np
import torch

from engine.request import Request
from engine.seeding import MASK64, mix_seeds


class Sampler:
    def __init__(self, ops, eos_token_ids: list[int]):
        self.ops = ops
        self.eos_token_ids = list(eos_token_ids)

    def banned_tokens(self, req: Request, offset: int = 0) -> list[int]:
        """Tokens a request may not draw yet (`offset` tokens ahead of its output): those
        that would stop it before min_tokens."""
        p = req.params
        if req.num_generated + offset >= p.min_tokens:
            return []
        return p.stop_token_ids + ([] if p.ignore_eos else self.eos_token_ids)

    def ban(self, logits: torch.Tensor, requests: list[Request], offsets=None) -> torch.Tensor:
        """The logits with each row's banned tokens at -inf (a copy when any is banned)."""
        banned = [(row, t) for row, req in enumerate(requests) if req.params.min_tokens
                  for t in self.banned_tokens(req, offsets[row] if offsets else 0)]
        if not banned:
            return logits
        logits = logits.clone()
        rows, cols = zip(*banned)
        logits[list(rows), list(cols)] = float("-inf")
        return logits

    def __call__(self, logits: torch.Tensor, greedy: torch.Tensor, requests: list[Request]):
        """logits [B, V] (model dtype) and their argmax [B], one row per request ->
        (tokens list[int], logprobs per row or None)."""
        token_list = self.sample(logits, greedy, requests)
        if any(req.logprobs is not None for req in requests):
            return token_list, self.logprobs(logits, requests, token_list)
        return token_list, [None] * len(requests)

    def sample(self, logits: torch.Tensor, greedy: torch.Tensor, requests: list[Request], offsets=None) -> list[int]:
        """The token of each row (row i: output token num_generated + offsets[i] of requests[i])."""
        return self.sample_on_device(logits, greedy, requests, offsets).tolist()  # the step's one blocking copy

    def sample_on_device(self, logits, greedy, requests, offsets=None) -> torch.Tensor:
        """`sample`'s tokens as an int64 tensor on the logits' device, without waiting for them."""
        banned = self.ban(logits, requests, offsets)
        if banned is not logits:
            logits, greedy = banned, banned.argmax(dim=-1)
        if all(req.params.temperature == 0 for req in requests):
            return greedy
        return self.ops.sample(logits, *self.row_params(requests, logits.device, offsets))

    @staticmethod
    def row_params(requests, device, offsets=None):
        """Per-row (temperature, top_k, top_p, seed) tensors on `device`."""
        n = len(requests)
        params = [req.params for req in requests]
        temperature = torch.tensor([p.temperature for p in params], dtype=torch.float32)
        top_k = torch.tensor([p.top_k for p in params], dtype=torch.int64)
        top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32)
        generated = np.fromiter((r.num_generated for r in requests), np.int64, n)
        if offsets is not None:
            generated += np.asarray(offsets, dtype=np.int64)
        seeds = mix_seeds(np.fromiter((r.seed & MASK64 for r in requests), np.uint64, n), generated)
        return (t.to(device, non_blocking=True) for t in (temperature, top_k, top_p, torch.from_numpy(seeds)))

    @staticmethod
    def logprobs(raw: torch.Tensor, requests: list[Request], tokens: list[int]):
        """Per row asking for them: {token: logprob} of the sampled token and the top k (temperature 1)."""
        wanted = [row for row, req in enumerate(requests) if req.params.logprobs is not None]
        logp = torch.log_softmax(raw[wanted].float(), dim=-1)
        k = max(requests[row].params.logprobs for row in wanted)
        top_vals, top_ids = logp.topk(min(k, logp.shape[1]), dim=-1)
        out = [None] * len(requests)
        for i, row in enumerate(wanted):
            n = requests[row].params.logprobs
            entry = dict(zip(top_ids[i, :n].tolist(), top_vals[i, :n].tolist()))
            entry[tokens[row]] = logp[i, tokens[row]].item()
            out[row] = entry
        return out
