"""rms_norm_linear: RMSNorm folded into the linear layer that follows it, in one GEMM launch.

A pre-norm decoder layer normalizes its residual stream and feeds the result straight into a
projection (qkv after the input norm, gate/up after the post-attention norm). For each row h
of x [M, K] (h = x + residual rounded to x's dtype when a residual is given, else h = x):

    y = (h / sqrt(mean(h^2) + eps) * norm_weight) @ weight.T  (+ bias)        [M, N]

with weight [N, K] in nn.Linear's layout. The RMS scale is one number per row, so it factors
out of the dot product:

    y = rsqrt(mean(h^2) + eps) * ((h * norm_weight) @ weight.T)  (+ bias)

A program owns a [BLOCK_M, BLOCK_N] tile of y and streams its rows of h along K in BLOCK_K
steps. The prologue of each step multiplies the h tile by norm_weight (rounded to x's dtype:
the tensor cores' operand) and the same tile, in fp32, adds to the row sums of squares; both
the dot and the sums accumulate in fp32. The epilogue scales each row by its rsqrt and adds
the bias. The normalized activations are never written to memory and no separate norm
kernel runs. With a residual the function returns (y, h): every program computes h, the
programs of the first N tile write it.

Rounding differs from the unfused pair (`kernels.reference.rms_norm_linear`: rms_norm rounded
to x's dtype, then the matmul): here h * norm_weight is rounded, the scale is applied in fp32
after the dot. Both round once before the tensor cores, so they agree to the dtype's precision.

Tile configurations come from a fixed table by M (no runtime autotuning: CUDA graphs replay
one launch and results must not depend on a timing race). Decode steps are memory-bound on
the weight, so BLOCK_N is small enough that a Qwen2-1.5B qkv projection (N = 2048) still
makes about 128 programs, one per SM of an H100/H200, at every M bucket. `tl.dot` needs every
side >= 16 on NVIDIA, so even M = 1 runs a 16-row tile (masked rows).

Above MAX_FUSED_ROWS rows (prefill) the launcher runs the `rms_norm` kernel and then
F.linear: there the GEMM is compute-bound, cuBLAS's tuned kernels are expected to beat this
simple one, and the norm's extra pass over [M, K] is small next to the GEMM. 256 is the
engine's largest decode batch (and CUDA-graph bucket) by default, so every decode step is
fused. benchmarks/gpu_checks/norm_linear.py times it against the unfused pair at M <= 256.
"""
import dataclasses

import torch
import triton
import triton.language as tl

from . import _alloc, _checks, _launch, norms, reference

MAX_FUSED_ROWS = 256  # the fused kernel serves M <= this; larger M: rms_norm kernel + cuBLAS


@dataclasses.dataclass(frozen=True)
class NormLinearConfig:
    """Launch parameters of the fused kernel."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int  # K steps in flight (software pipelining depth)


# (largest M, BLOCK_M, BLOCK_N): BLOCK_M covers the bucket (at least 16, for tl.dot), BLOCK_N keeps
# cdiv(M, BLOCK_M) * cdiv(2048, BLOCK_N) at 128 programs at the top of each bucket.
_TILES = ((16, 16, 16), (32, 32, 16), (64, 32, 32), (128, 64, 32), (MAX_FUSED_ROWS, 64, 64))
ROW_BUCKETS = tuple(top for top, _, _ in _TILES)  # the largest M of each configuration


def tile_config(n_rows: int, dtype: torch.dtype) -> NormLinearConfig:
    """The configuration for M = n_rows (at most MAX_FUSED_ROWS) rows of `dtype`.

    16-bit: four warps; 128-wide K steps, four in flight, for the skinny decode tiles, 64-wide
    steps, three in flight, for the 64-row ones. fp32, whose full-precision dots run on the
    FMA units with their operands in registers: 64-wide K steps for the tiles below 32x32,
    32-wide above, unpipelined except the 64-row tiles (eight warps, two steps in flight).
    These are the choices that compile without register spills for sm_80 and sm_90 with
    triton 3.6 and 3.9 (the compile report; wider K steps or more stages spill a few bytes).
    """
    block_m, block_n = next((m, n) for top, m, n in _TILES if n_rows <= top)
    wide = block_m == 64
    if dtype == torch.float32:
        block_k = 32 if block_m * block_n >= 32 * 32 else 64
        return NormLinearConfig(block_m, block_n, block_k, num_warps=8 if wide else 4, num_stages=2 if wide else 1)
    return NormLinearConfig(block_m, block_n, 64 if wide else 128, num_warps=4, num_stages=3 if wide else 4)


@triton.jit(do_not_specialize=["n_rows"])  # one compiled kernel for every batch
def _rms_norm_linear_kernel(
    x_ptr, residual_ptr, norm_weight_ptr, weight_ptr, bias_ptr, y_ptr, h_ptr,
    n_rows, n_out, n_in, eps,
    stride_xm, stride_rm, stride_wn, stride_ym, stride_hm,
    HAS_RESIDUAL: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    col_ok = cols < n_out
    h_row_ok = rows < tl.where(pid_n == 0, n_rows, 0)  # the first N tile writes h
    weight_rows = weight_ptr + cols.to(tl.int64)[:, None] * stride_wn

    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    sum_sq = tl.zeros([BLOCK_M], tl.float32)
    for k_start in range(0, n_in, BLOCK_K):
        ks = k_start + tl.arange(0, BLOCK_K)
        k_ok = ks < n_in
        tile_ok = row_ok[:, None] & k_ok[None, :]
        x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :], mask=tile_ok, other=0.0)
        if HAS_RESIDUAL:
            r = tl.load(residual_ptr + rows[:, None] * stride_rm + ks[None, :], mask=tile_ok, other=0.0)
            # Round the sum to the input dtype first, as the model's own residual add does.
            x = (x.to(tl.float32) + r.to(tl.float32)).to(x_ptr.dtype.element_ty)
            tl.store(h_ptr + rows[:, None] * stride_hm + ks[None, :], x, mask=h_row_ok[:, None] & k_ok[None, :])
        h = x.to(tl.float32)
        sum_sq += tl.sum(h * h, axis=1)
        norm_weight = tl.load(norm_weight_ptr + ks, mask=k_ok, other=0.0).to(tl.float32)
        a = (h * norm_weight[None, :]).to(x_ptr.dtype.element_ty)
        w = tl.load(weight_rows + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(a, tl.trans(w), acc, input_precision=PRECISION)

    y = acc * tl.math.rsqrt(sum_sq / n_in + eps)[:, None]
    if HAS_BIAS:
        y += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :], y.to(y_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


def launch(x, norm_weight, eps, weight, bias, residual, config: NormLinearConfig):
    """The fused kernel with explicit launch parameters (`rms_norm_linear` passes tile_config's)."""
    n_rows, n_in = x.shape
    n_out = weight.shape[0]
    y = _alloc.empty((n_rows, n_out), x.dtype, x.device)
    h = None if residual is None else _alloc.empty((n_rows, n_in), x.dtype, x.device)
    if n_rows:
        x = _launch.unit_stride(x)
        weight = _launch.unit_stride(weight)
        r = x if residual is None else _launch.unit_stride(residual)
        norm_weight = norm_weight.contiguous()  # the kernel steps along both vectors with unit stride
        bias = None if bias is None else bias.contiguous()
        grid = (triton.cdiv(n_rows, config.block_m), triton.cdiv(n_out, config.block_n))
        _rms_norm_linear_kernel[grid](
            x, r, norm_weight, weight, weight if bias is None else bias, y, y if h is None else h,
            n_rows, n_out, n_in, float(eps),
            x.stride(0), r.stride(0), weight.stride(0), y.stride(0), n_in,
            HAS_RESIDUAL=residual is not None, HAS_BIAS=bias is not None,
            BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
            **_launch.dot_settings(x.dtype),
            num_warps=config.num_warps, num_stages=config.num_stages,
        )
    return y if residual is None else (y, h)


@_checks.checked(_checks.check_rms_norm_linear)
def rms_norm_linear(x, norm_weight, eps, weight, bias=None, residual=None):
    """F.linear(rms_norm(x (+ residual), norm_weight, eps), weight, bias) for x [M, K], weight [N, K].

    Returns y [M, N], or (y, h) with a residual (h = x + residual). Up to MAX_FUSED_ROWS rows
    one fused launch; beyond, the rms_norm kernel then F.linear (module docstring).
    """
    if x.shape[0] > MAX_FUSED_ROWS:
        return reference.linear_after(norms.rms_norm.unchecked(x, norm_weight, eps, residual), weight, bias)
    return launch(x, norm_weight, eps, weight, bias, residual, tile_config(x.shape[0], x.dtype))
