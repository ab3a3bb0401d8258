"""RMSNorm and LayerNorm over the last dimension, optionally fused with the residual add.

For each row h of the flattened input (h = x + residual, rounded to x's dtype, when a
residual is given; otherwise h = x):
  RMSNorm:   y = h / sqrt(mean(h^2) + eps) * weight
  LayerNorm: y = (h - mean(h)) / sqrt(var(h) + eps) * weight + bias   (biased variance)
Statistics run in fp32 on the whole row, which one program holds in registers (the row is
padded to the next power of two and masked), so x is read once and y (and h) written once.
Small hidden sizes put several rows in one program so each program still moves a few KiB.
"""
import triton
import triton.language as tl

from . import _alloc, _checks, _launch

# Elements one program normalizes: enough to keep the memory pipeline busy, few enough
# to stay in registers.
_ELEMENTS_PER_PROGRAM = 4096


@triton.jit(do_not_specialize=["n_rows"])  # one compiled kernel for every batch
def _norm_kernel(
    x_ptr, residual_ptr, weight_ptr, bias_ptr, y_ptr, h_ptr,
    n_rows, n_cols, x_row_stride, residual_row_stride, eps,
    IS_RMS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
    cols = tl.arange(0, BLOCK_COLS)
    col_ok = cols < n_cols
    mask = (rows[:, None] < n_rows) & col_ok[None, :]

    x = tl.load(x_ptr + rows[:, None] * x_row_stride + cols[None, :], mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(residual_ptr + rows[:, None] * residual_row_stride + cols[None, :], mask=mask, other=0.0)
        # Round the sum to the input dtype first, as the model's own residual add does.
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(h_ptr + rows[:, None] * n_cols + cols[None, :], x, mask=mask)
    h = x.to(tl.float32)

    weight = tl.load(weight_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    if IS_RMS:
        rstd = tl.math.rsqrt(tl.sum(h * h, axis=1) / n_cols + eps)
        y = h * rstd[:, None] * weight[None, :]
    else:
        mean = tl.sum(h, axis=1) / n_cols
        centered = tl.where(mask, h - mean[:, None], 0.0)
        rstd = tl.math.rsqrt(tl.sum(centered * centered, axis=1) / n_cols + eps)
        y = centered * rstd[:, None] * weight[None, :]
        if HAS_BIAS:
            y += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * n_cols + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


def _rows(t, n_cols):
    """t as a [rows, n_cols] view with unit column stride (copying only if it must)."""
    return _launch.unit_stride(t.reshape(-1, n_cols))


def _norm(x, weight, bias, eps, residual, is_rms):
    n_cols = x.shape[-1]
    y = _alloc.empty(x.shape, x.dtype, x.device)
    h = None if residual is None else _alloc.empty(x.shape, x.dtype, x.device)
    if x.numel():
        x2 = _rows(x, n_cols)
        r2 = x2 if residual is None else _rows(residual, n_cols)
        n_rows = x2.shape[0]
        # Rows per program from the width alone: one compiled variant per hidden size, whatever
        # the batch (the masked rows of a short batch cost nothing but idle lanes).
        block_cols = triton.next_power_of_2(n_cols)
        block_rows = max(1, _ELEMENTS_PER_PROGRAM // block_cols)
        num_warps = min(max(block_rows * block_cols // 512, 1), 16)
        _norm_kernel[(triton.cdiv(n_rows, block_rows),)](
            x2, r2, weight, weight if bias is None else bias, y, y if h is None else h,
            n_rows, n_cols, x2.stride(0), r2.stride(0), float(eps),
            IS_RMS=is_rms, HAS_RESIDUAL=residual is not None, HAS_BIAS=bias is not None,
            BLOCK_ROWS=block_rows, BLOCK_COLS=block_cols, num_warps=num_warps,
        )
    return y if residual is None else (y, h)


@_checks.checked(_checks.check_rms_norm)
def rms_norm(x, weight, eps, residual=None):
    """RMSNorm of x [..., N] by weight [N]; with a residual, returns (rms_norm(x + residual), x + residual)."""
    return _norm(x, weight, None, eps, residual, is_rms=True)


@_checks.checked(_checks.check_layer_norm)
def layer_norm(x, weight, bias, eps, residual=None):
    """LayerNorm of x [..., N] (bias may be None); with a residual, returns (layer_norm(h), h), h = x + residual."""
    return _norm(x, weight, bias, eps, residual, is_rms=False)
