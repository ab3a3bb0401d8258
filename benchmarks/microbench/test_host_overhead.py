"""The engine's own cost: time per autoregressive step outside the model, per running sequence.

    .venv/bin/pytest benchmarks/microbench/test_host_overhead.py --benchmark-only

Each round is one `Engine.step()` of a decode batch of the bundled GPT-2; the model (forward,
LM head and argmax) is timed separately in the same rounds by a wrapper around it, and the
host share -- scheduling, input preparation, sampling, output processing -- is the step time
minus the model time. It is reported in `extra_info` as microseconds per running sequence
per step (median over the rounds); the target on a CPU is at most 10 us at batch 256.
"""
import statistics
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from engine import Engine, SamplingParams

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BATCHES = (1, 64, 256)
ROUNDS = 20


class TimedModel(nn.Module):
    """The model, with the seconds spent in its forward and LM head added up per step."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seconds = model, 0.0

    def _timed(self, fn, *args):
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn(*args)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        return out

    def forward(self, *args):
        return self._timed(self.model, *args)

    def compute_logits(self, hidden):
        return self._timed(self.model.compute_logits, hidden)


def host_seconds_per_sequence(engine, batch, rounds):
    """Median over `rounds` steps of (step time - model time) / batch."""
    runner = engine.executor.runner
    timed = runner.model = TimedModel(runner.model)
    samples = []
    for _ in range(rounds):
        timed.seconds = 0.0
        start = time.perf_counter()
        outputs = engine.step()
        elapsed = time.perf_counter() - start
        assert len(outputs) == batch
        samples.append((elapsed - timed.seconds) / batch)
    return statistics.median(samples)


@pytest.mark.benchmark(group="engine_host_share_ar")
@pytest.mark.parametrize("batch", BATCHES)
def test_ar_host_share(benchmark, batch):
    engine = Engine(str(ASSETS / "ar-gpt2"), device=DEVICE, max_num_seqs=batch, enforce_eager=True)
    params = SamplingParams(temperature=0.0, max_tokens=2 * ROUNDS + 8, ignore_eos=True)
    prompt = engine.tokenizer.encode("the old dog near the river", add_special_tokens=False)
    for _ in range(batch):
        engine.add_request(prompt, params)
    engine.step()  # prefill
    engine.step()  # one warm-up decode step
    per_sequence = host_seconds_per_sequence(engine, batch, ROUNDS)
    benchmark.extra_info["host_us_per_sequence"] = per_sequence * 1e6
    benchmark.pedantic(engine.step, rounds=ROUNDS, iterations=1)
    print(f"\nbatch {batch}: host {per_sequence * 1e6:.2f} us per running sequence per step")
