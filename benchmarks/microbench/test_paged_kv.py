"""Microbenchmarks of the paged-KV kernels against their torch references.

    .venv/bin/pytest benchmarks/microbench/test_paged_kv.py

Shapes from benchmarks.kernel_cases: tiny ones on CPU (Triton's interpreter), decode-step
ones with engine-shaped block tables on CUDA.
"""
import pytest
import torch

from benchmarks.kernel_cases import DECODE, STORE_KV, DecodeCase, decode_inputs
from benchmarks.microbench.kernel_suite import DEVICE, DTYPE, IMPLEMENTATIONS, synced


@pytest.mark.benchmark(group="decode_attention")
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("case", DECODE.for_device(DEVICE), ids=DecodeCase.label)
def test_decode_attention(benchmark, impl, case):
    args = decode_inputs(case, DTYPE, DEVICE)
    out = benchmark(synced(IMPLEMENTATIONS[impl].decode_attention, *args, case.head_dim ** -0.5))
    assert out.shape == args[0].shape


@pytest.mark.benchmark(group="store_kv")
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("shape", STORE_KV.for_device(DEVICE), ids=lambda s: "T{}-H{}-D{}-bs{}".format(*s))
def test_store_kv(benchmark, impl, shape):
    tokens, heads, head_dim, block_size, _ = shape
    num_blocks = max(4 * tokens // block_size, 64)
    k = torch.randn(tokens, heads, head_dim, dtype=DTYPE, device=DEVICE)
    v = torch.randn_like(k)
    k_cache = torch.zeros(num_blocks, block_size, heads, head_dim, dtype=DTYPE, device=DEVICE)
    v_cache = torch.zeros_like(k_cache)
    slots = torch.randperm(num_blocks * block_size, device=DEVICE)[:tokens].to(torch.int32)
    benchmark(synced(IMPLEMENTATIONS[impl].store_kv, k, v, k_cache, v_cache, slots))
    assert torch.equal(k_cache.view(-1, heads, head_dim)[slots.long()], k)
