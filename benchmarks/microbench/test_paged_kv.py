"""Microbenchmarks of the paged-KV kernels against their torch references.

    .venv/bin/pytest benchmarks/microbench/test_paged_kv.py

Tiny shapes on CPU (Triton's interpreter), decode-step shapes on CUDA.
"""
import pytest
import torch

import kernels
from kernels import reference
from benchmarks.gpu_checks.decode_attention import paged_kv

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.bfloat16 if CUDA else torch.float32
IMPLEMENTATIONS = {"triton": kernels, "reference": reference}

# (batch, context, Hq, Hkv, head_dim, block_size)
DECODE_SHAPES = (
    [(64, 4096, 32, 8, 128, 16), (1, 32768, 32, 8, 128, 16)] if CUDA else [(2, 100, 4, 2, 32, 16)]
)
# (tokens, heads, head_dim, cache slots)
STORE_SHAPES = [(4096, 8, 128, 65536), (64, 8, 128, 65536)] if CUDA else [(16, 2, 32, 64)]


def _sync(result):
    if CUDA:
        torch.cuda.synchronize()
    return result


@pytest.mark.benchmark(group="decode_attention")
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("shape", DECODE_SHAPES, ids=lambda s: "B{}-ctx{}-Hq{}-Hkv{}-D{}-bs{}".format(*s))
def test_decode_attention(benchmark, impl, shape):
    args = paged_kv(*shape, DTYPE, DEVICE)
    scale = shape[4] ** -0.5
    fn = IMPLEMENTATIONS[impl].decode_attention
    out = benchmark(lambda: _sync(fn(*args, scale)))
    assert out.shape == args[0].shape


@pytest.mark.benchmark(group="store_kv")
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("shape", STORE_SHAPES, ids=lambda s: "T{}-H{}-D{}-slots{}".format(*s))
def test_store_kv(benchmark, impl, shape):
    tokens, heads, head_dim, num_slots = shape
    k = torch.randn(tokens, heads, head_dim, dtype=DTYPE, device=DEVICE)
    v = torch.randn_like(k)
    k_cache = torch.zeros(num_slots // 16, 16, heads, head_dim, dtype=DTYPE, device=DEVICE)
    v_cache = torch.zeros_like(k_cache)
    slots = torch.randperm(num_slots, device=DEVICE)[:tokens].to(torch.int32)
    fn = IMPLEMENTATIONS[impl].store_kv
    benchmark(lambda: _sync(fn(k, v, k_cache, v_cache, slots)))
    assert torch.equal(k_cache.view(-1, heads, head_dim)[slots.long()], k)
