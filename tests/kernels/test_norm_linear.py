"""Triton rms_norm_linear (RMSNorm folded into the following GEMM) against kernels.reference."""
import pytest
import torch

import kernels
from benchmarks.kernel_cases import NORM_LINEAR
from kernels import norm_linear, reference
from tests.kernels.matching import float_dtypes

# The fused kernel never rounds the normalized activations to the dtype (it rounds h * weight
# and scales after the dot), so it differs from the reference by a rounding of the operand:
# relative to the output's scale, fp32 to float rounding, 16-bit to a few ulps of the dtype.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 2e-2}
EPS = 1e-6


def _inputs(rows, n_in, n_out, dtype, device):
    x = torch.randn(rows, n_in, device=device).mul(3).add(0.5).to(dtype)
    residual = torch.randn(rows, n_in, device=device).to(dtype)
    norm_weight = torch.randn(n_in, device=device).to(dtype)
    weight = (torch.randn(n_out, n_in, device=device) / n_in**0.5).to(dtype)
    bias = torch.randn(n_out, device=device).to(dtype)
    return x, residual, norm_weight, weight, bias


def _assert_close(out, ref, dtype):
    """Output within the dtype's tolerance of the reference, relative to its largest entry."""
    assert out.shape == ref.shape and out.dtype == ref.dtype
    scale = ref.float().abs().max().clamp_min(1.0).item()
    tol = TOLERANCE[dtype] * scale
    torch.testing.assert_close(out.float(), ref.float(), rtol=0, atol=tol)


@pytest.mark.parametrize("case", NORM_LINEAR.cpu, ids=str)
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_matches_reference(case, with_residual, with_bias, device):
    rows, n_in, n_out = case
    for dtype in float_dtypes(device):  # bf16 on CUDA only: the interpreter's bf16 dot is wrong
        x, residual, norm_weight, weight, bias = _inputs(rows, n_in, n_out, dtype, device)
        args = (x, norm_weight, EPS, weight, bias if with_bias else None, residual if with_residual else None)
        out, ref = kernels.rms_norm_linear(*args), reference.rms_norm_linear(*args)
        if with_residual:
            (out, h), (ref, ref_h) = out, ref
            assert torch.equal(h, ref_h)  # x + residual rounded to x's dtype, bit for bit
        _assert_close(out, ref, dtype)


def test_every_row_bucket_and_the_unfused_path(device):
    """One M per tile configuration, and one above MAX_FUSED_ROWS (rms_norm kernel + F.linear)."""
    dtype = torch.float32
    for rows in (*norm_linear.ROW_BUCKETS, norm_linear.MAX_FUSED_ROWS + 1):
        x, residual, norm_weight, weight, bias = _inputs(rows, 48, 40, dtype, device)
        args = (x, norm_weight, EPS, weight, bias, residual)
        (out, h), (ref, ref_h) = kernels.rms_norm_linear(*args), reference.rms_norm_linear(*args)
        assert torch.equal(h, ref_h)
        _assert_close(out, ref, dtype)


def test_strided_input_and_fp32_norm_weight(device):
    # x a column slice of a wider tensor (row stride != K); the norm weight strided, in fp32.
    dtype = torch.float16
    wide = torch.randn(5, 120, device=device, dtype=dtype)
    x = wide[:, 10:90]
    norm_weight = torch.randn(160, device=device)[::2]  # strided too
    weight = (torch.randn(24, 80, device=device) / 9).to(dtype)
    _assert_close(kernels.rms_norm_linear(x, norm_weight, EPS, weight),
                  reference.rms_norm_linear(x, norm_weight, EPS, weight), dtype)


def test_empty_batch(device):
    x, residual, norm_weight, weight, _ = _inputs(0, 32, 16, torch.float32, device)
    y, h = kernels.rms_norm_linear(x, norm_weight, EPS, weight, None, residual)
    assert y.shape == (0, 16) and h.shape == (0, 32)


def _good_args():
    return {"x": torch.ones(2, 8), "norm_weight": torch.ones(8), "eps": 1e-5, "weight": torch.ones(4, 8),
            "bias": torch.ones(4), "residual": torch.ones(2, 8)}


@pytest.mark.parametrize(
    "change, name",
    [
        ({"x": "not a tensor"}, "x"),
        ({"x": torch.ones(2, 2, 8)}, "x"),
        ({"x": torch.zeros(2, 8, dtype=torch.int32)}, "x"),
        ({"norm_weight": torch.ones(9)}, "norm_weight"),
        ({"eps": -1.0}, "eps"),
        ({"weight": torch.ones(4, 9)}, "weight"),
        ({"weight": torch.ones(8)}, "weight"),
        ({"weight": torch.ones(4, 8, dtype=torch.float16)}, "weight"),
        ({"weight": torch.ones(0, 8)}, "weight"),
        ({"bias": torch.ones(5)}, "bias"),
        ({"bias": torch.ones(4, dtype=torch.float16)}, "bias"),
        ({"residual": torch.ones(3, 8)}, "residual"),
        ({"residual": torch.ones(2, 8, dtype=torch.float16)}, "residual"),
    ],
)
def test_bad_arguments_raise(change, name):
    for fn in (kernels.rms_norm_linear, reference.rms_norm_linear):
        with pytest.raises(ValueError, match=f"^{name} "):
            fn(**{**_good_args(), **change})
