"""pytest-benchmark: the norm, fused norm + projection, rotary and activation kernels against
their torch references.

    .venv/bin/pytest benchmarks/microbench/test_elementwise.py --benchmark-only

Shapes from benchmarks.kernel_cases: tiny ones on CPU (Triton's interpreter), Llama-8B
prefill and decode sizes on CUDA.
"""
import pytest
import torch

from benchmarks.kernel_cases import ACTIVATION, NORM, NORM_LINEAR, ROTARY
from benchmarks.microbench.kernel_suite import DEVICE, DTYPE, IMPLEMENTATIONS as IMPLS, synced

BLOCK_SIZE = 16


def _randn(*shape):
    return torch.randn(*shape, device=DEVICE, dtype=DTYPE)


@pytest.mark.benchmark(group="rms_norm+residual")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", NORM.for_device(DEVICE), ids=str)
def test_rms_norm(benchmark, impl, shape):
    x, residual, weight = _randn(*shape), _randn(*shape), _randn(shape[-1])
    y, h = benchmark(synced(IMPLS[impl].rms_norm, x, weight, 1e-6, residual))
    assert y.shape == h.shape == x.shape


@pytest.mark.benchmark(group="rms_norm_linear+residual")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", NORM_LINEAR.for_device(DEVICE), ids=str)
def test_rms_norm_linear(benchmark, impl, case):
    rows, n_in, n_out = case
    x, residual, norm_weight = _randn(rows, n_in), _randn(rows, n_in), _randn(n_in)
    weight = _randn(n_out, n_in) / n_in**0.5
    y, h = benchmark(synced(IMPLS[impl].rms_norm_linear, x, norm_weight, 1e-6, weight, None, residual))
    assert y.shape == (rows, n_out) and h.shape == x.shape


@pytest.mark.benchmark(group="layer_norm")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", NORM.for_device(DEVICE), ids=str)
def test_layer_norm(benchmark, impl, shape):
    x, weight, bias = _randn(*shape), _randn(shape[-1]), _randn(shape[-1])
    assert benchmark(synced(IMPLS[impl].layer_norm, x, weight, bias, 1e-5)).shape == x.shape


def _rotary_args(shape):
    tokens, hq, hkv, d = shape
    qkv = _randn(tokens, (hq + 2 * hkv) * d)
    q, k, v = (t.view(tokens, -1, d) for t in qkv.split([hq * d, hkv * d, hkv * d], dim=1))
    angles = torch.rand(tokens, d // 2, device=DEVICE) * 6.3
    return q, k, v, torch.arange(tokens, device=DEVICE), angles.cos(), angles.sin()


@pytest.mark.benchmark(group="rotary_embedding")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", ROTARY.for_device(DEVICE), ids=str)
def test_rotary_embedding(benchmark, impl, shape):
    q, k, _, positions, cos, sin = _rotary_args(shape)
    q_rot, k_rot = benchmark(synced(IMPLS[impl].rotary_embedding, q, k, positions, cos, sin))
    assert q_rot.shape == q.shape and k_rot.shape == k.shape


@pytest.mark.benchmark(group="rotary_store_kv")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", ROTARY.for_device(DEVICE), ids=str)
def test_rotary_store_kv(benchmark, impl, shape):
    """Bias, rotary and the cache store of one Llama attention layer step in one call."""
    tokens, hq, hkv, d = shape
    q, k, v, positions, cos, sin = _rotary_args(shape)
    bias = _randn((hq + 2 * hkv) * d)
    num_blocks = tokens // BLOCK_SIZE + 1
    k_cache, v_cache = _randn(num_blocks, BLOCK_SIZE, hkv, d), _randn(num_blocks, BLOCK_SIZE, hkv, d)
    slots = torch.randperm(num_blocks * BLOCK_SIZE, device=DEVICE)[:tokens].to(torch.int32)
    q_out, _, _ = benchmark(synced(IMPLS[impl].rotary_store_kv, q, k, v, positions, cos, sin,
                                    k_cache, v_cache, slots, bias))
    assert q_out.shape == q.shape


@pytest.mark.benchmark(group="silu_and_mul")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", ACTIVATION.for_device(DEVICE), ids=str)
def test_silu_and_mul(benchmark, impl, shape):
    x = _randn(*shape)
    assert benchmark(synced(IMPLS[impl].silu_and_mul, x)).shape == (*shape[:-1], shape[-1] // 2)


@pytest.mark.benchmark(group="gelu")
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", ACTIVATION.for_device(DEVICE), ids=str)
def test_gelu(benchmark, impl, approximate, shape):
    x = _randn(*shape)
    assert benchmark(synced(IMPLS[impl].gelu, x, approximate)).shape == x.shape
