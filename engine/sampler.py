"""Turns the logits of the requests that sample this step into their next tokens.

Per-row parameters go to the backend's `sample` kernel. The seed of a row at a step is
mix_seed(request seed, tokens generated so far) (engine/seeding.py), so a seeded request
draws the same tokens whatever else shares its batch. Until min_tokens are generated, the
end-of-sequence and stop tokens are masked out.
"""
import torch

from engine.request import Request
from engine.seeding import mix_seed


class Sampler:
    def __init__(self, ops, eos_token_ids: list[int]):
        self.ops = ops
        self.eos_token_ids = list(eos_token_ids)

    def banned_tokens(self, req: Request) -> list[int]:
        """Tokens a request may not draw yet: those that would stop it before min_tokens."""
        p = req.params
        if req.num_generated >= p.min_tokens:
            return []
        return p.stop_token_ids + ([] if p.ignore_eos else self.eos_token_ids)

    def __call__(self, logits: torch.Tensor, requests: list[Request]):
        """logits fp32 [B, V], one row per request -> (tokens list[int], logprobs per row or None)."""
        raw = logits
        banned = [(row, t) for row, req in enumerate(requests) for t in self.banned_tokens(req)]
        if banned:
            logits = logits.clone()
            rows, cols = zip(*banned)
            logits[list(rows), list(cols)] = float("-inf")
        params = [req.params for req in requests]
        if all(p.temperature == 0 for p in params):
            tokens = logits.argmax(dim=-1)  # what sample() does for greedy rows, without its sorts
        else:
            dev = logits.device
            tokens = self.ops.sample(
                logits,
                torch.tensor([p.temperature for p in params], dtype=torch.float32, device=dev),
                torch.tensor([p.top_k for p in params], dtype=torch.int64, device=dev),
                torch.tensor([p.top_p for p in params], dtype=torch.float32, device=dev),
                torch.tensor([mix_seed(r.seed, r.num_generated) for r in requests], dtype=torch.int64, device=dev),
            )
        token_list = tokens.tolist()
        return token_list, self._logprobs(raw, requests, token_list)

    @staticmethod
    def _logprobs(raw: torch.Tensor, requests: list[Request], tokens: list[int]):
        """Per row asking for them: {token: logprob} of the sampled token and the top k (temperature 1)."""
        wanted = [row for row, req in enumerate(requests) if req.params.logprobs is not None]
        if not wanted:
            return [None] * len(requests)
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
