"""Triton RMSNorm / LayerNorm against kernels.reference."""
import pytest
import torch

import kernels
from benchmarks.kernel_cases import NORM
from kernels import reference
from tests.kernels.matching import assert_matches, float_dtypes


def _inputs(shape, dtype, device, with_residual):
    x = torch.randn(shape, device=device).mul(3).add(0.5).to(dtype)
    weight = torch.randn(shape[-1], device=device).to(dtype)
    bias = torch.randn(shape[-1], device=device).to(dtype)
    residual = torch.randn(shape, device=device).to(dtype) if with_residual else None
    return x, weight, bias, residual


@pytest.mark.parametrize("shape", NORM.cpu, ids=str)
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
def test_rms_norm(shape, with_residual, device):
    for dtype in float_dtypes(device):
        x, weight, _, residual = _inputs(shape, dtype, device, with_residual)
        out = kernels.rms_norm(x, weight, 1e-6, residual)
        assert_matches(out, reference.rms_norm(x, weight, 1e-6, residual), dtype)


@pytest.mark.parametrize("shape", NORM.cpu, ids=str)
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_layer_norm(shape, with_residual, with_bias, device):
    for dtype in float_dtypes(device):
        x, weight, bias, residual = _inputs(shape, dtype, device, with_residual)
        bias = bias if with_bias else None
        out = kernels.layer_norm(x, weight, bias, 1e-5, residual)
        assert_matches(out, reference.layer_norm(x, weight, bias, 1e-5, residual), dtype)


def test_residual_sum_is_exact(device):
    # h must be x + residual rounded to x's dtype, bit for bit, as the model adds it.
    dtype = torch.float16
    x, weight, _, residual = _inputs((4, 80), dtype, device, True)
    _, h = kernels.rms_norm(x, weight, 1e-6, residual)
    assert torch.equal(h, x + residual)


def test_strided_input_and_fp32_weight(device):
    # A column slice of a wider tensor (row stride != hidden) with a weight in another dtype.
    wide = torch.randn(6, 200, device=device, dtype=torch.float16)
    x = wide[:, 10:110]
    weight = torch.randn(100, device=device)
    out = kernels.layer_norm(x, weight, None, 1e-5)
    assert_matches(out, reference.layer_norm(x, weight, None, 1e-5), torch.float16)


def test_many_short_rows_share_a_program(device):
    x, weight, bias, residual = _inputs((37, 64), torch.float32, device, True)
    assert_matches(
        kernels.layer_norm(x, weight, bias, 1e-5, residual),
        reference.layer_norm(x, weight, bias, 1e-5, residual),
        torch.float32,
    )


@pytest.mark.parametrize(
    "change, name",
    [
        ({"x": "not a tensor"}, "x"),
        ({"x": torch.zeros(2, 8, dtype=torch.int32)}, "x"),
        ({"weight": torch.ones(9)}, "weight"),
        ({"bias": torch.ones(9)}, "bias"),
        ({"eps": -1.0}, "eps"),
        ({"residual": torch.ones(3, 8)}, "residual"),
        ({"residual": torch.ones(2, 8, dtype=torch.float16)}, "residual"),
    ],
)
def test_bad_arguments_raise(change, name):
    args = {"x": torch.ones(2, 8), "weight": torch.ones(8), "bias": torch.ones(8), "eps": 1e-5, "residual": None}
    args.update(change)
    with pytest.raises(ValueError, match=f"^{name} "):
        kernels.layer_norm(**args)
    if "bias" not in change:
        del args["bias"]
        with pytest.raises(ValueError, match=f"^{name} "):
            kernels.rms_norm(**args)


@pytest.mark.parametrize("hidden", [64, 96, 100, 4096])
def test_reference_rms_norm_is_hf_llama_bit_for_bit(hidden):
    """The torch twin against HF's own LlamaRMSNorm (fp32, where HF rounds nowhere between
    the steps): identical bits, so the CPU engine's greedy tokens can equal HF's exactly."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(hidden)
    hf = LlamaRMSNorm(hidden, eps=1e-5)
    with torch.no_grad():
        hf.weight.copy_(torch.randn(hidden))
    for scale in (1e-3, 1.0, 300.0):
        x = torch.randn(33, hidden) * scale
        with torch.no_grad():
            assert torch.equal(reference.rms_norm(x, hf.weight, 1e-5), hf(x))
