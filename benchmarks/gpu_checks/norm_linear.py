"""rms_norm_linear (RMSNorm folded into the following GEMM) against the two launches it
replaces in a decoder layer: the rms_norm kernel (with its fused residual add), then
F.linear (cuBLAS). Shapes: a Qwen2-1.5B layer's qkv (N 2048) and gate/up (N 17920)
projections, K 1536, at decode batches M = 1, 16, 64 and 256, with the residual the layers
past the first pass in. One more M, 1024, runs the fused kernel past MAX_FUSED_ROWS (with the
largest tile configuration), where the public function would take the unfused path: the
row says whether that threshold sits where the fused kernel stops winning.

Bytes are what the fused kernel must at least move: the weight, x and the residual once, y
and h written once; flops are the GEMM's 2 M N K. At these M the GEMM is bound by reading
the weight, so the roofline column says how close each launch gets to streaming it.
"""
import torch
import torch.nn.functional as F

import kernels
from kernels import norm_linear, reference

from ..kernel_cases import NORM_LINEAR
from . import rel_err, result_row, tolerance

EPS = 1e-6


def _row(case, device, dtype, timer):
    rows, n_in, n_out = case
    x = torch.randn(rows, n_in, device=device, dtype=dtype)
    residual = torch.randn(rows, n_in, device=device, dtype=dtype)
    norm_weight = torch.randn(n_in, device=device, dtype=dtype)
    weight = (torch.randn(n_out, n_in, device=device) / n_in**0.5).to(dtype)
    args = (x, norm_weight, EPS, weight, None, residual)
    name, fused = "rms_norm_linear", lambda: kernels.rms_norm_linear(*args)
    if rows > norm_linear.MAX_FUSED_ROWS:
        config = norm_linear.tile_config(norm_linear.MAX_FUSED_ROWS, dtype)
        name, fused = "rms_norm_linear forced fused", lambda: norm_linear.launch(*args, config)
    (out, h), (ref, ref_h) = fused(), reference.rms_norm_linear(*args)
    err = max(rel_err(out, ref), rel_err(h, ref_h))

    def unfused():
        normed, _ = kernels.rms_norm(x, norm_weight, EPS, residual)
        return F.linear(normed, weight)

    element = x.element_size()
    moved = (n_out * n_in + 3 * rows * n_in + rows * n_out + n_in) * element
    return result_row(name, f"M={rows} K={n_in} N={n_out} +residual", dtype, err, tolerance(dtype), fused,
                      "rms_norm kernel + F.linear", unfused, timer, nbytes=moved, flops=2 * rows * n_in * n_out)


def check(device, dtype, quick, timer):
    return [_row(case, device, dtype, timer) for case in (NORM_LINEAR.quick if quick else NORM_LINEAR.gpu)]
