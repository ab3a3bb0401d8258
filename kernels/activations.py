"""MLP activations: SwiGLU's silu(gate) * up, and GELU (exact erf form or tanh approximation).

Both are memory-bound elementwise maps computed in fp32 and stored in the input dtype:
  silu_and_mul: x = [gate | up] along the last dim (2I) -> gate / (1 + exp(-gate)) * up   [..., I]
  gelu "none":  0.5 x (1 + erf(x / sqrt(2)))                      (BERT)
  gelu "tanh":  0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))  (GPT-2)
tanh is built from exp as sign(u) (1 - e) / (1 + e) with e = exp(-2|u|), which cannot
overflow, because `tl.math.tanh` is not available in every Triton version this project runs on.
"""
import triton
import triton.language as tl

from . import _alloc, _checks, _launch

_BLOCK = 2048
_NUM_WARPS = 8


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, n_cols, x_row_stride, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    gate = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * x_row_stride + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    out = gate / (1.0 + tl.exp(-gate)) * up
    tl.store(out_ptr + row * n_cols + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["n_elements"])  # one compiled kernel for every batch
def _gelu_kernel(x_ptr, out_ptr, n_elements, TANH: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if TANH:
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)  # sqrt(2 / pi) (x + 0.044715 x^3)
        decay = tl.exp(-2.0 * tl.abs(u))  # in (0, 1]: never overflows
        tanh_abs = (1.0 - decay) / (1.0 + decay)
        cdf = 0.5 * (1.0 + tl.where(u < 0, -tanh_abs, tanh_abs))
    else:
        cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))  # 1 / sqrt(2)
    tl.store(out_ptr + offsets, (x * cdf).to(out_ptr.dtype.element_ty), mask=mask)


@_checks.checked(_checks.check_gated)
def silu_and_mul(x):
    """SwiGLU: x [..., 2I] = [gate | up] -> silu(gate) * up of shape [..., I], in x's dtype."""
    n_cols = x.shape[-1] // 2
    out = _alloc.empty((*x.shape[:-1], n_cols), x.dtype, x.device)
    if out.numel():
        x2 = _launch.unit_stride(x.reshape(-1, 2 * n_cols))
        block = min(_BLOCK, triton.next_power_of_2(n_cols))
        grid = (x2.shape[0], triton.cdiv(n_cols, block))
        _silu_and_mul_kernel[grid](x2, out, n_cols, x2.stride(0), BLOCK=block,
                                   num_warps=min(_NUM_WARPS, max(block // 256, 1)))
    return out


@_checks.checked(_checks.check_gelu)
def gelu(x, approximate="none"):
    """GELU of x (any shape), exact ("none") or tanh-approximated ("tanh"), in x's dtype."""
    out = _alloc.empty(x.shape, x.dtype, x.device)
    if x.numel():
        grid = (triton.cdiv(x.numel(), _BLOCK),)
        _gelu_kernel[grid](x.contiguous(), out, x.numel(), TANH=approximate == "tanh", BLOCK=_BLOCK,
                           num_warps=_NUM_WARPS)
    return out
