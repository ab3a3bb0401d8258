"""The preemption stress scenario: 200 random requests through a cache that is too small
for them, half of them sharing a prefix, so the scheduler preempts and the prefix cache hits."""
import random

from engine import SamplingParams

GREEDY = dict(temperature=0.0, ignore_eos=True)
ENGINE = dict(block_size=4, num_kv_blocks=24, max_num_seqs=24, max_num_batched_tokens=48)


def stress_requests(seed=1, count=200) -> list[tuple[list[int], int]]:
    """(prompt token ids, max_tokens) pairs."""
    rng = random.Random(seed)
    shared = [rng.randrange(4, 128) for _ in range(9)]  # half the prompts share it: prefix hits too

    def prompt():
        own = [rng.randrange(4, 128) for _ in range(rng.randint(1, 16))]
        return shared[: rng.randint(4, 9)] + own if rng.random() < 0.5 else own

    return [(prompt(), rng.randint(1, 8)) for _ in range(count)]


def run_requests(engine, requests) -> tuple[dict[int, list[int]], int]:
    """Add every request, step until done: (request index -> tokens, cached prompt tokens)."""
    ids = {engine.add_request(p, SamplingParams(max_tokens=n, **GREEDY)): i for i, (p, n) in enumerate(requests)}
    got, cached_tokens = {}, 0
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                got[ids[out.request_id]] = out.token_ids
                cached_tokens += out.metrics.cached_prompt_tokens
    return got, cached_tokens
