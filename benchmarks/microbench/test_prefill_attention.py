"""Microbenchmarks of prefill_attention and paged_prefill_attention against their references.

    .venv/bin/pytest benchmarks/microbench/test_prefill_attention.py

Shapes from benchmarks.kernel_cases: tiny ones on CPU (Triton's interpreter), 8k-token
prefills on CUDA.
"""
import pytest

from benchmarks.kernel_cases import PAGED_PREFILL, PREFILL, PagedPrefillCase, PrefillCase, packed_inputs, paged_prefill_inputs
from benchmarks.microbench.kernel_suite import DEVICE, DTYPE, IMPLEMENTATIONS, synced


@pytest.mark.benchmark(group="prefill_attention")
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("case", PREFILL.for_device(DEVICE), ids=PrefillCase.label)
def test_prefill_attention(benchmark, impl, causal, case):
    q, k, v, cu = packed_inputs(case.lens, case.num_q_heads, case.num_kv_heads, case.head_dim, DTYPE, DEVICE)
    out = benchmark(synced(IMPLEMENTATIONS[impl].prefill_attention, q, k, v, cu, case.head_dim**-0.5, causal))
    assert out.shape == q.shape


@pytest.mark.benchmark(group="paged_prefill_attention")
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("case", PAGED_PREFILL.for_device(DEVICE), ids=PagedPrefillCase.label)
def test_paged_prefill_attention(benchmark, impl, case):
    args = paged_prefill_inputs(case, DTYPE, DEVICE)
    out = benchmark(synced(IMPLEMENTATIONS[impl].paged_prefill_attention, *args, case.head_dim ** -0.5))
    assert out.shape == args[0].shape
