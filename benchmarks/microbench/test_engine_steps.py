"""Microbenchmarks of one engine step on the bundled models: an AR decode step and a
mask-predict pass, at a few batch sizes.

    .venv/bin/pytest benchmarks/microbench/test_engine_steps.py --benchmark-only

Each round is one `Engine.step()` of a batch already past its prefill (AR) or first pass
(mask-predict), so the number is the steady-state cost of a step.
"""
from pathlib import Path

import pytest
import torch

from engine import Engine, MaskPredictParams, SamplingParams

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BATCHES = (1, 16, 64)
ROUNDS = 20


def _prompts(engine, batch):
    words = "the old dog near the river".split()
    ids = engine.tokenizer.encode(" ".join(words), add_special_tokens=False)
    return [ids[: 2 + i % 4] for i in range(batch)]


@pytest.mark.benchmark(group="engine_ar_decode_step")
@pytest.mark.parametrize("batch", BATCHES)
def test_ar_decode_step(benchmark, batch):
    engine = Engine(str(ASSETS / "ar-gpt2"), device=DEVICE)
    params = SamplingParams(temperature=0.0, max_tokens=ROUNDS + 8, ignore_eos=True)
    for prompt in _prompts(engine, batch):
        engine.add_request(prompt, params)
    engine.step()  # prefill
    benchmark.pedantic(engine.step, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="engine_mask_predict_pass")
@pytest.mark.parametrize("batch", BATCHES)
def test_mask_predict_pass(benchmark, batch):
    engine = Engine(str(ASSETS / "cmlm-bert"), device=DEVICE)
    params = MaskPredictParams(length=32, iterations=ROUNDS + 4)
    for prompt in _prompts(engine, batch):
        engine.add_request(prompt, params)
    engine.step()  # first pass
    benchmark.pedantic(engine.step, rounds=ROUNDS, iterations=1, warmup_rounds=1)
