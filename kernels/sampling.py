"""Per-row sampling with temperature, top-k and top-p, without sorting the vocabulary.

On a GPU one program owns one row of logits [B, V] and streams over its vocabulary in
tiles (in Triton's interpreter a program takes a stack of rows, see `_rows_per_program`;
every reduction is still per row). With x = logits / T (T clamped to >= 1e-6, as the
reference does):

- greedy rows (T <= 0) return argmax(logits), the lowest index on ties;
- otherwise the draw is Gumbel-max over the kept tokens,
      token = argmax_{j kept} x_j - log(-log(u_j)),
  an exact sample from softmax(x) restricted to the kept set, where u_j is the counter-based
  uniform `kernels.reference.uniform_noise` reproduces bit for bit (murmur3's fmix32 of the
  token index and the row's seed, in wrap-around uint32 arithmetic), so a draw depends only
  on its row's logits, parameters and seed.

The kept set is {x_j >= x_k} (top-k: x_k the k-th largest value, ties kept), then among
those {p_j >= p_min} (top-p: p = softmax over the top-k set, p_min the smallest probability
the nucleus needs, i.e. the smallest value v whose strictly-larger mass is < top_p). Both
thresholds are the largest t with  sum_{j: key_j >= t} w_j >= target:
  top-k: key = x, w = 1, target = k;    top-p: key = p, w = p, target = top_p
where keys are fp32 values mapped to int32 so that integer order is float order. The search
over that integer range is exact: each pass over the vocabulary tiles evaluates the mass at
PROBES evenly spaced candidate thresholds at once (a 16-way bisection), narrows the range to
the bracket where the criterion flips and snaps the bracket's ends to element keys. That is
at most ceil(32 / log2(PROBES)) = 8 passes, and 3 to 5 on real rows, where the bracket soon
holds a single distinct value. The threshold found is always the key of an actual element,
and ties at it are kept, as in the reference. Masses are fp32 sums in another order than
the reference's sorted cumsum, so a row whose nucleus mass lands within rounding of top_p
could keep a different set; top_p = 1 is exactly "off" (the reference's cumsum can round
past 1 and drop a tail of ~1e-7 mass).
"""
import os

import torch
import triton
import triton.language as tl

from . import _alloc, _checks

BLOCK = 2048  # tile of the streaming passes
SEARCH_BLOCK = 256  # tile of the threshold search, whose working set is PROBES times larger
PROBES = 16
INT32_MAX = tl.constexpr(2**31 - 1)
INT32_MIN = tl.constexpr(-(2**31))


@triton.jit
def _uniform(seed, offs):
    """u in (0, 1) for token indices `offs`: fmix32(j * 0x9E3779B1 + seed_lo ^ seed_hi * 0x85EBCA77)."""
    seed_lo = seed.to(tl.uint32)
    seed_hi = (seed >> 32).to(tl.uint32)
    h = (offs.to(tl.uint32) * 0x9E3779B1 + seed_lo) ^ (seed_hi * 0x85EBCA77)
    h = h ^ (h >> 16)
    h = h * 0x85EBCA6B
    h = h ^ (h >> 13)
    h = h * 0xC2B2AE35
    h = h ^ (h >> 16)
    return ((h >> 8).to(tl.float32) + 0.5) * 5.9604644775390625e-08  # / 2^24, exact


@triton.jit
def _order_key(x):
    """fp32 -> int32 with the same order (for non-NaN values); the map is its own inverse on bits."""
    bits = x.to(tl.int32, bitcast=True)
    return tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)


@triton.jit
def _key_value(key):
    """The fp32 value whose `_order_key` is `key`."""
    bits = tl.where(key >= 0, key, key ^ 0x7FFFFFFF)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _scaled_logits(row_ptrs, valid, offs, temperature):
    """x = logits / T in fp32 (IEEE division, as torch does) for a [ROWS, BLOCK] tile; -inf where not valid."""
    logits = tl.load(row_ptrs[:, None] + offs[None, :], mask=valid, other=float("-inf")).to(tl.float32)
    return tl.div_rn(logits, temperature[:, None])


@triton.jit
def _probs(x, x_max, sum_exp, x_floor):
    """softmax over the tokens with x >= x_floor (the top-k set); 0 elsewhere. Row stats are [ROWS]."""
    return tl.where(x >= x_floor[:, None], tl.div_rn(tl.exp(x - x_max[:, None]), sum_exp[:, None]), 0.0)


@triton.jit
def _row_extrema(row_ptrs, vocab, temperature, BLOCK: tl.constexpr):
    """Per row: (max, min, argmax) of x; argmax takes the lowest index on ties."""
    x_max = tl.full(row_ptrs.shape, float("-inf"), tl.float32)
    x_min = tl.full(row_ptrs.shape, float("inf"), tl.float32)
    arg = tl.zeros(row_ptrs.shape, tl.int32)
    for start in range(0, vocab, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = (offs < vocab)[None, :]
        x = _scaled_logits(row_ptrs, valid, offs, temperature)
        tile_max, tile_arg = tl.max(x, axis=1, return_indices=True, return_indices_tie_break_left=True)
        # Strictly greater: an equal max in a later tile keeps the earlier (lower) index.
        arg = tl.where(tile_max > x_max, start + tile_arg, arg)
        x_max = tl.maximum(x_max, tile_max)
        x_min = tl.minimum(x_min, tl.min(tl.where(valid, x, float("inf")), axis=1))
    return x_max, x_min, arg


@triton.jit
def _sum_exp(row_ptrs, vocab, temperature, x_max, x_floor, BLOCK: tl.constexpr):
    """Per row: sum of exp(x - x_max) over the tokens with x >= x_floor, the top-k set's softmax norm."""
    total = tl.zeros(row_ptrs.shape, tl.float32)
    for start in range(0, vocab, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = (offs < vocab)[None, :]
        x = _scaled_logits(row_ptrs, valid, offs, temperature)
        total += tl.sum(tl.where(x >= x_floor[:, None], tl.exp(x - x_max[:, None]), 0.0), axis=1)
    return total


@triton.jit
def _largest_threshold(row_ptrs, vocab, temperature, lo, hi, target, x_max, sum_exp, x_floor,
                       BY_PROB: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, PROBES: tl.constexpr):
    """Per row: the largest key t in [lo, hi] with sum_{key_j >= t} w_j >= target (module docstring).

    BY_PROB=False: key = x, w = 1 (top-k). BY_PROB=True: key = w = p (top-p). Rows with
    lo == hi are left alone. The caller guarantees the criterion at lo; for top-p it may fail
    by rounding when the total mass is just below target, and lo, which keeps everything, is
    returned.

    Each pass also snaps the new bracket to the element keys inside it (the smallest key at
    or above its start, the largest below its end), so the search stops as soon as one
    distinct value is left, usually long before the bracket is a single integer.
    """
    probe_ids = tl.arange(0, PROBES).to(tl.int64)
    while tl.sum((lo < hi).to(tl.int32), axis=0) > 0:
        active = lo < hi
        # PROBES brackets of `step` keys each cover [lo, hi]; probe c is the start of bracket c.
        step = (hi.to(tl.int64) - lo + PROBES) // PROBES
        probes = lo[:, None] + probe_ids[None, :] * step[:, None]
        in_range = probes <= hi[:, None]
        probe_keys = tl.minimum(probes, hi[:, None]).to(tl.int32)
        # Per-lane partials across tiles, reduced once per pass: no cross-warp reduction per tile.
        mass = tl.zeros([ROWS, BLOCK, PROBES], tl.float32)
        min_above = tl.full([ROWS, BLOCK, PROBES], INT32_MAX, tl.int32)
        max_below = tl.full([ROWS, BLOCK, PROBES], INT32_MIN, tl.int32)
        for start in range(0, vocab, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            valid = (offs < vocab)[None, :]
            x = _scaled_logits(row_ptrs, valid, offs, temperature)
            if BY_PROB:
                weight = _probs(x, x_max, sum_exp, x_floor)
                key = weight.to(tl.int32, bitcast=True)
            else:
                weight = tl.where(valid, 1.0, 0.0)
                key = _order_key(x)
            # [ROWS, BLOCK, PROBES]: which elements sit at or above each probe.
            above = key[:, :, None] >= probe_keys[:, None, :]
            counted = valid[:, :, None]  # lanes past the vocabulary have no key
            mass += tl.where(above, weight[:, :, None], 0.0)
            min_above = tl.minimum(min_above, tl.where(above & counted, key[:, :, None], INT32_MAX))
            max_below = tl.maximum(max_below, tl.where(above | ~counted, INT32_MIN, key[:, :, None]))
        # The mass only falls as t grows, so the probes that meet the target form a prefix, and
        # the answer lies between the last one that meets it and the first one that does not.
        meets = (tl.sum(mass, axis=1) >= target[:, None]) & in_range
        lo_next = tl.maximum(lo, tl.max(tl.where(meets, tl.min(min_above, axis=1), INT32_MIN), axis=1))
        hi_next = tl.minimum(hi, tl.min(tl.where(in_range & ~meets, tl.max(max_below, axis=1), INT32_MAX), axis=1))
        lo = tl.where(active, lo_next, lo)
        hi = tl.where(active, hi_next, hi)
    return lo


@triton.jit
def _gumbel_argmax(row_ptrs, vocab, temperature, seeds, x_floor, check_prob, x_max, sum_exp, p_floor,
                   BLOCK: tl.constexpr):
    """Per row: argmax of x - log(-log(u)) over the kept tokens (lowest index on ties)."""
    best = tl.full(row_ptrs.shape, float("-inf"), tl.float32)
    arg = tl.zeros(row_ptrs.shape, tl.int32)
    for start in range(0, vocab, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = (offs < vocab)[None, :]
        x = _scaled_logits(row_ptrs, valid, offs, temperature)
        keep = x >= x_floor[:, None]
        if check_prob:
            keep = keep & (_probs(x, x_max, sum_exp, x_floor) >= p_floor[:, None])
        u = _uniform(seeds[:, None], offs[None, :])
        score = tl.where(keep, x + -tl.log(-tl.log(u)), float("-inf"))
        tile_best, tile_arg = tl.max(score, axis=1, return_indices=True, return_indices_tie_break_left=True)
        arg = tl.where(tile_best > best, start + tile_arg, arg)
        best = tl.maximum(best, tile_best)
    return arg


@triton.jit
def _any(flags):
    return tl.sum(flags.to(tl.int32), axis=0) > 0


@triton.jit
def _sample_kernel(logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, seeds_ptr, out_ptr,
                   batch, vocab, stride_row, ROWS: tl.constexpr, BLOCK: tl.constexpr,
                   SEARCH_BLOCK: tl.constexpr, PROBES: tl.constexpr):
    slots = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    # Slots past the batch redo its last row (no masks, no NaN from all -inf rows); never stored.
    rows = tl.minimum(slots, batch - 1)
    row_ptrs = logits_ptr + rows.to(tl.int64) * stride_row
    raw_temperature = tl.load(temperature_ptr + rows)
    top_k = tl.load(top_k_ptr + rows)
    top_p = tl.load(top_p_ptr + rows)
    seeds = tl.load(seeds_ptr + rows)

    greedy = ~(raw_temperature > 0)
    # x = logits / T; greedy rows use T = 1, so their x is the logits themselves.
    temperature = tl.where(greedy, 1.0, tl.maximum(raw_temperature, 1e-6))
    use_top_k = ~greedy & (top_k > 0) & (top_k < vocab)
    use_top_p = ~greedy & (top_p < 1.0)

    token = tl.zeros([ROWS], tl.int32)
    x_max = tl.zeros([ROWS], tl.float32)
    x_min = tl.zeros([ROWS], tl.float32)
    if _any(greedy | use_top_k | use_top_p):
        x_max, x_min, token = _row_extrema(row_ptrs, vocab, temperature, BLOCK)
    if _any(~greedy):
        x_floor = tl.full([ROWS], float("-inf"), tl.float32)
        sum_exp = tl.full([ROWS], 1.0, tl.float32)
        if _any(use_top_k):
            lo = tl.where(use_top_k, _order_key(x_min), 0)
            hi = tl.where(use_top_k, _order_key(x_max), 0)
            kth = _largest_threshold(row_ptrs, vocab, temperature, lo, hi, top_k.to(tl.float32),
                                     x_max, sum_exp, x_floor, False, ROWS, SEARCH_BLOCK, PROBES)
            x_floor = tl.where(use_top_k, _key_value(kth), x_floor)
        p_floor = tl.zeros([ROWS], tl.float32)
        check_prob = _any(use_top_p)
        if check_prob:
            sum_exp = _sum_exp(row_ptrs, vocab, temperature, x_max, x_floor, BLOCK)
            # The largest probability is exp(0) / sum_exp: the top of the search range.
            p_top = tl.div_rn(1.0, sum_exp).to(tl.int32, bitcast=True)
            lo = tl.zeros([ROWS], tl.int32)
            hi = tl.where(use_top_p, p_top, 0)
            p_key = _largest_threshold(row_ptrs, vocab, temperature, lo, hi, top_p,
                                       x_max, sum_exp, x_floor, True, ROWS, SEARCH_BLOCK, PROBES)
            p_floor = p_key.to(tl.float32, bitcast=True)
        drawn = _gumbel_argmax(row_ptrs, vocab, temperature, seeds, x_floor, check_prob,
                               x_max, sum_exp, p_floor, BLOCK)
        token = tl.where(greedy, token, drawn)
    tl.store(out_ptr + slots, token.to(tl.int64), mask=slots < batch)


@triton.jit
def _uniform_noise_kernel(seeds_ptr, out_ptr, vocab, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    seed = tl.load(seeds_ptr + row)
    tl.store(out_ptr + row.to(tl.int64) * vocab + offs, _uniform(seed, offs), mask=offs < vocab)


def _rows_per_program(batch, block):
    """One row per program on a GPU, where a row's streaming passes keep an SM busy. Triton's
    interpreter pays Python overhead per operation rather than per element, so there a
    program takes a whole stack of rows (about 2^20 elements per [ROWS, BLOCK, PROBES] tile)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return 1
    return min(triton.next_power_of_2(batch), max(1, 2**20 // (block * PROBES)))


@_checks.checked(_checks.check_sample)
def sample(logits, temperature, top_k, top_p, seeds):
    """Draw one token per row, int64 [B], from logits [B, V]; see `kernels.reference.sample`."""
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    batch, vocab = logits.shape
    out = _alloc.empty((batch,), torch.int64, logits.device)
    if batch == 0:
        return out
    block = min(BLOCK, triton.next_power_of_2(vocab))
    search_block = min(SEARCH_BLOCK, block)
    rows = _rows_per_program(batch, search_block)
    _sample_kernel[(triton.cdiv(batch, rows),)](
        logits, temperature.contiguous(), top_k.contiguous(), top_p.contiguous(), seeds.contiguous(), out,
        batch, vocab, logits.stride(0), ROWS=rows, BLOCK=block, SEARCH_BLOCK=search_block, PROBES=PROBES,
        num_warps=8,
    )
    return out


def uniform_noise(seeds, vocab_size):
    """The sampler's uniforms [B, V] fp32, the same bits as `kernels.reference.uniform_noise`."""
    _checks.check_tensor("seeds", seeds, ndim=1, dtypes=(torch.int64,))
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    out = _alloc.empty((seeds.shape[0], vocab_size), torch.float32, seeds.device)
    if seeds.shape[0] == 0:
        return out
    block = min(BLOCK, triton.next_power_of_2(vocab_size))
    _uniform_noise_kernel[(seeds.shape[0], triton.cdiv(vocab_size, block))](
        seeds.contiguous(), out, vocab_size, BLOCK=block
    )
    return out
