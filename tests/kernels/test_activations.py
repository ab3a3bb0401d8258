"""Triton silu_and_mul and gelu against kernels.reference."""
import pytest
import torch

import kernels
from benchmarks.kernel_cases import ACTIVATION
from kernels import reference
from tests.kernels.matching import assert_matches, float_dtypes


def _wide_range(shape, dtype, device):
    # Covers the saturated tails (|x| up to ~12) as well as the curved middle.
    return (torch.randn(shape, device=device) * 4).to(dtype)


@pytest.mark.parametrize("shape", ACTIVATION.cpu, ids=str)
def test_silu_and_mul(shape, device):
    for dtype in float_dtypes(device):
        x = _wide_range(shape, dtype, device)
        out = kernels.silu_and_mul(x)
        assert out.shape == (*shape[:-1], shape[-1] // 2)
        assert_matches(out, reference.silu_and_mul(x), dtype)


def test_silu_and_mul_strided_rows(device):
    x = torch.randn(5, 300, device=device)[:, :200]
    assert_matches(kernels.silu_and_mul(x), reference.silu_and_mul(x), torch.float32)


@pytest.mark.parametrize("shape", ACTIVATION.cpu + [(1,), (3001,)], ids=str)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(shape, approximate, device):
    for dtype in float_dtypes(device):
        x = _wide_range(shape, dtype, device)
        assert_matches(kernels.gelu(x, approximate), reference.gelu(x, approximate), dtype)


def test_gelu_saturates_without_nan(device):
    x = torch.tensor([-1e4, -60.0, -10.0, 0.0, 10.0, 60.0, 1e4], device=device)
    for approximate in ("none", "tanh"):
        assert_matches(kernels.gelu(x, approximate), reference.gelu(x, approximate), torch.float32)


def test_gelu_non_contiguous_input(device):
    x = torch.randn(40, 30, device=device).t()
    assert_matches(kernels.gelu(x, "tanh"), reference.gelu(x, "tanh"), torch.float32)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: kernels.silu_and_mul(torch.ones(2, 7)), "x"),
        (lambda: kernels.silu_and_mul(torch.ones(2, 8, dtype=torch.int64)), "x"),
        (lambda: kernels.silu_and_mul([1.0, 2.0]), "x"),
        (lambda: kernels.gelu(torch.ones(4, dtype=torch.int32)), "x"),
        (lambda: kernels.gelu(torch.ones(4), "fast"), "approximate"),
    ],
)
def test_bad_arguments_raise(call, name):
    with pytest.raises(ValueError, match=f"^{name} "):
        call()
