"""Microbenchmarks of prefill_attention and paged_prefill_attention against their references.

    .venv/bin/pytest benchmarks/microbench/test_prefill_attention.py

Tiny shapes on CPU (Triton's interpreter), 8k-token prefills on CUDA.
"""
import pytest
import torch

import kernels
from kernels import reference
from benchmarks.gpu_checks.prefill_attention import packed_inputs, paged_inputs

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.bfloat16 if CUDA else torch.float32
IMPLEMENTATIONS = {"triton": kernels, "reference": reference}

# (sequence lengths, Hq, Hkv, head_dim)
PREFILL_SHAPES = (
    [([1024] * 8, 32, 8, 128), ([4096] * 2, 32, 8, 128), ([48] * 128, 12, 12, 64)]
    if CUDA else [([5, 24, 1], 2, 1, 32)]
)
# (cached prefix lengths, new token counts, Hq, Hkv, head_dim, block_size)
PAGED_SHAPES = (
    [([2048] * 4, [512] * 4, 32, 8, 128, 16), ([0, 3000, 77], [2048, 512, 1], 32, 8, 128, 16)]
    if CUDA else [([20, 0], [6, 3], 2, 1, 32, 16)]
)


def _sync(result):
    if CUDA:
        torch.cuda.synchronize()
    return result


def _prefill_id(shape):
    lens, hq, hkv, d = shape
    return f"B{len(lens)}-L{max(lens)}-Hq{hq}-Hkv{hkv}-D{d}"


@pytest.mark.benchmark(group="prefill_attention")
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("shape", PREFILL_SHAPES, ids=_prefill_id)
def test_prefill_attention(benchmark, impl, causal, shape):
    lens, hq, hkv, head_dim = shape
    q, k, v, cu = packed_inputs(lens, hq, hkv, head_dim, DTYPE, DEVICE)
    fn = IMPLEMENTATIONS[impl].prefill_attention
    out = benchmark(lambda: _sync(fn(q, k, v, cu, head_dim**-0.5, causal)))
    assert out.shape == q.shape


@pytest.mark.benchmark(group="paged_prefill_attention")
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize(
    "shape", PAGED_SHAPES, ids=lambda s: f"B{len(s[0])}-prefix{max(s[0])}-new{max(s[1])}-bs{s[5]}"
)
def test_paged_prefill_attention(benchmark, impl, shape):
    args = paged_inputs(*shape, DTYPE, DEVICE)
    fn = IMPLEMENTATIONS[impl].paged_prefill_attention
    out = benchmark(lambda: _sync(fn(*args, shape[4] ** -0.5)))
    assert out.shape == args[0].shape
