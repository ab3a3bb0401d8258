"""Microbenchmarks of `sample` and `confidence_argmax` against their torch references.

    .venv/bin/pytest benchmarks/microbench/test_sampling.py

Tiny shapes on CPU (Triton's interpreter); a decode batch at Qwen2's vocabulary on CUDA.
`sample` is also timed against eager sort-based sampling (softmax + sort + multinomial).
"""
import pytest
import torch

import kernels
from kernels import reference
from benchmarks.gpu_checks.sampling import torch_sample

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.bfloat16 if CUDA else torch.float32
BATCH, VOCAB = (256, 151936) if CUDA else (4, 256)
IMPLEMENTATIONS = {"triton": kernels, "reference": reference}
# (temperature, top_k, top_p): plain temperature sampling, and the usual filtered setting
SETTINGS = {"T1": (1.0, 0, 1.0), "T.8-k50-p.9": (0.8, 50, 0.9)}


def _sync(result):
    if CUDA:
        torch.cuda.synchronize()
    return result


def _logits():
    return (torch.randn(BATCH, VOCAB, device=DEVICE) * 4).to(DTYPE)


def _params(setting):
    temperature, top_k, top_p = SETTINGS[setting]
    full = lambda value: torch.full((BATCH,), value, device=DEVICE)
    seeds = torch.arange(BATCH, dtype=torch.int64, device=DEVICE)
    return full(float(temperature)), full(top_k), full(float(top_p)), seeds


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("impl", [*IMPLEMENTATIONS, "torch"])
def test_sample(benchmark, impl, setting):
    benchmark.group = f"sample {setting} [{BATCH}, {VOCAB}]"
    logits, params = _logits(), _params(setting)
    if impl == "torch":
        out = benchmark(lambda: _sync(torch_sample(logits, *params[:3])))
    else:
        out = benchmark(lambda: _sync(IMPLEMENTATIONS[impl].sample(logits, *params)))
    assert out.shape == (BATCH,)


@pytest.mark.benchmark(group=f"confidence_argmax [{BATCH}, {VOCAB}]")
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_confidence_argmax(benchmark, impl):
    logits = _logits()
    token, prob = benchmark(lambda: _sync(IMPLEMENTATIONS[impl].confidence_argmax(logits)))
    assert token.shape == prob.shape == (BATCH,)
