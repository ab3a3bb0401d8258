"""Argmax and its softmax probability per row, in one streaming pass over the vocabulary.

The mask-predict engine scores every masked slot by the probability of its best token:

    token = argmax_j x_j,    prob = exp(x_token - m) / sum_j exp(x_j - m) = 1 / sum_j exp(x_j - m)

with m = max_j x_j. One program owns one row and walks its vocabulary in tiles, keeping the
running max m, the index where it was first reached, and the sum of exp(x_j - m) rescaled by
exp(m_old - m_new) whenever the max grows (the online-softmax recurrence). The softmax is
never materialised: the row is read once and two numbers per row are written.

-inf logits (special tokens the engine forbids) contribute exp(-inf) = 0. A tile that is all
-inf while the running max is still -inf would give exp(-inf - -inf) = NaN, so the shift uses
0 instead of an infinite max; at least one finite logit per row is assumed.
"""
import torch
import triton
import triton.language as tl

from . import _alloc, _checks, _launch

MAX_BLOCK = 4096


@triton.jit
def _confidence_argmax_kernel(logits_ptr, token_ptr, prob_ptr, vocab, stride_row, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    row_ptr = logits_ptr + row.to(tl.int64) * stride_row
    best = tl.full([], float("-inf"), tl.float32)
    best_idx = tl.full([], 0, tl.int32)
    sum_exp = tl.full([], 0.0, tl.float32)
    for start in range(0, vocab, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + offs, mask=offs < vocab, other=float("-inf")).to(tl.float32)
        tile_max, tile_idx = tl.max(x, axis=0, return_indices=True, return_indices_tie_break_left=True)
        # Strictly greater: an equal max in a later tile keeps the earlier (lower) index.
        improved = tile_max > best
        best_idx = tl.where(improved, start + tile_idx, best_idx)
        new_max = tl.maximum(best, tile_max)
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        sum_exp = sum_exp * tl.exp(best - shift) + tl.sum(tl.exp(x - shift), axis=0)
        best = new_max
    tl.store(token_ptr + row, best_idx.to(tl.int64))
    tl.store(prob_ptr + row, 1.0 / sum_exp)


@_checks.checked(_checks.check_logits)
def confidence_argmax(logits):
    """(argmax token int64 [B], its softmax probability fp32 [B]) of logits [B, V]."""
    logits = _launch.unit_stride(logits)
    batch, vocab = logits.shape
    token = _alloc.empty((batch,), torch.int64, logits.device)
    prob = _alloc.empty((batch,), torch.float32, logits.device)
    if batch == 0:
        return token, prob
    block = min(MAX_BLOCK, triton.next_power_of_2(vocab))
    _confidence_argmax_kernel[(batch,)](
        logits, token, prob, vocab, logits.stride(0), BLOCK=block, num_warps=8 if block >= 2048 else 4
    )
    return token, prob
