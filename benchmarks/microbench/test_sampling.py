"""Microbenchmarks of `sample` and `confidence_argmax` against their torch references.

    .venv/bin/pytest benchmarks/microbench/test_sampling.py

Shapes from benchmarks.kernel_cases: tiny ones on CPU (Triton's interpreter); decode batches
at GPT-2's and Qwen2's vocabularies on CUDA.
`sample` is also timed against eager sort-based sampling (softmax + sort + multinomial).
"""
import pytest
import torch

from benchmarks.gpu_checks.sampling import torch_sample
from benchmarks.kernel_cases import SAMPLING
from benchmarks.microbench.kernel_suite import DEVICE, DTYPE, IMPLEMENTATIONS, synced

# (temperature, top_k, top_p): plain temperature sampling, and the usual filtered setting
SETTINGS = {"T1": (1.0, 0, 1.0), "T.8-k50-p.9": (0.8, 50, 0.9)}
SHAPES = SAMPLING.for_device(DEVICE)


def _logits(batch, vocab):
    return (torch.randn(batch, vocab, device=DEVICE) * 4).to(DTYPE)


def _params(batch, setting):
    temperature, top_k, top_p = SETTINGS[setting]
    full = lambda value: torch.full((batch,), value, device=DEVICE)
    seeds = torch.arange(batch, dtype=torch.int64, device=DEVICE)
    return full(float(temperature)), full(top_k), full(float(top_p)), seeds


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("impl", [*IMPLEMENTATIONS, "torch"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_sample(benchmark, impl, setting, shape):
    benchmark.group = f"sample {setting} {list(shape)}"
    logits, params = _logits(*shape), _params(shape[0], setting)
    if impl == "torch":
        out = benchmark(synced(torch_sample, logits, *params[:3]))
    else:
        out = benchmark(synced(IMPLEMENTATIONS[impl].sample, logits, *params))
    assert out.shape == (shape[0],)


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_confidence_argmax(benchmark, impl, shape):
    benchmark.group = f"confidence_argmax {list(shape)}"
    logits = _logits(*shape)
    token, prob = benchmark(synced(IMPLEMENTATIONS[impl].confidence_argmax, logits))
    assert token.shape == prob.shape == (shape[0],)
