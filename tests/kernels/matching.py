"""Shared helpers of the elementwise kernel tests: dtypes per device and dtype tolerances."""
import torch


def float_dtypes(device):
    """fp32 and fp16 everywhere; bf16 only on CUDA (the interpreter's bf16 path is not the GPU's)."""
    if device == "cuda":
        return [torch.float32, torch.float16, torch.bfloat16]
    return [torch.float32, torch.float16]


def tolerance(dtype):
    return {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]


def assert_matches(out, ref, dtype):
    """A tensor, or a tuple of tensors, equal to the reference's within the dtype's tolerance."""
    outs, refs = (out, ref) if isinstance(ref, tuple) else ((out,), (ref,))
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert o.shape == r.shape and o.dtype == r.dtype
        torch.testing.assert_close(o, r, rtol=tolerance(dtype), atol=tolerance(dtype))
