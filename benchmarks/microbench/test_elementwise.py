"""pytest-benchmark: the norm, rotary and activation kernels against their torch references.

    .venv/bin/pytest benchmarks/microbench/test_elementwise.py --benchmark-only

Tiny shapes on CPU (Triton's interpreter), Llama-8B-prefill-sized shapes on CUDA.
"""
import pytest
import torch

import kernels
from kernels import reference

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.bfloat16 if CUDA else torch.float32
TOKENS = 8192 if CUDA else 8
HIDDEN = 4096 if CUDA else 96
HEADS, KV_HEADS, HEAD_DIM = (32, 8, 128) if CUDA else (4, 2, 32)
INTERMEDIATE = 14336 if CUDA else 160
IMPLS = {"triton": kernels, "reference": reference}


def _synced(fn, *args):
    """Time the work, not the launch: wait for the GPU inside each measured call."""
    def run():
        out = fn(*args)
        if CUDA:
            torch.cuda.synchronize()
        return out
    return run


def _randn(*shape):
    return torch.randn(*shape, device=DEVICE, dtype=DTYPE)


@pytest.mark.benchmark(group="rms_norm+residual")
@pytest.mark.parametrize("impl", IMPLS)
def test_rms_norm(benchmark, impl):
    x, residual, weight = _randn(TOKENS, HIDDEN), _randn(TOKENS, HIDDEN), _randn(HIDDEN)
    y, h = benchmark(_synced(IMPLS[impl].rms_norm, x, weight, 1e-6, residual))
    assert y.shape == h.shape == x.shape


@pytest.mark.benchmark(group="layer_norm")
@pytest.mark.parametrize("impl", IMPLS)
def test_layer_norm(benchmark, impl):
    x, weight, bias = _randn(TOKENS, HIDDEN), _randn(HIDDEN), _randn(HIDDEN)
    assert benchmark(_synced(IMPLS[impl].layer_norm, x, weight, bias, 1e-5)).shape == x.shape


@pytest.mark.benchmark(group="rotary_embedding")
@pytest.mark.parametrize("impl", IMPLS)
def test_rotary_embedding(benchmark, impl):
    q, k = _randn(TOKENS, HEADS, HEAD_DIM), _randn(TOKENS, KV_HEADS, HEAD_DIM)
    angles = torch.rand(TOKENS, HEAD_DIM // 2, device=DEVICE) * 6.3
    positions = torch.arange(TOKENS, device=DEVICE)
    q_rot, k_rot = benchmark(_synced(IMPLS[impl].rotary_embedding, q, k, positions, angles.cos(), angles.sin()))
    assert q_rot.shape == q.shape and k_rot.shape == k.shape


@pytest.mark.benchmark(group="silu_and_mul")
@pytest.mark.parametrize("impl", IMPLS)
def test_silu_and_mul(benchmark, impl):
    x = _randn(TOKENS, 2 * INTERMEDIATE)
    assert benchmark(_synced(IMPLS[impl].silu_and_mul, x)).shape == (TOKENS, INTERMEDIATE)


@pytest.mark.benchmark(group="gelu")
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("impl", IMPLS)
def test_gelu(benchmark, impl, approximate):
    x = _randn(TOKENS, INTERMEDIATE)
    assert benchmark(_synced(IMPLS[impl].gelu, x, approximate)).shape == x.shape
