"""sample: one token per row of logits [B, V] with temperature, top-k and top-p, no sort.

The distribution, for a row with temperature T > 0 (x = logits / max(T, 1e-6), fp32):
- top-k keeps K = {j : x_j >= x_k}, x_k the k-th largest x (ties counted; k <= 0 or k >= V:
  everything);
- top-p weighs the kept tokens in integers, w_j = floor(exp(x_j - M) * 2^32) with M = max x,
  so sums are exact whatever their order; with S = sum_K w and target = top_p * S (fp64),
  it keeps {j in K : x_j >= x_p}, x_p the largest value of K whose tokens at or above it
  weigh >= target: the smallest set of most probable tokens reaching top_p of the mass, ties
  kept. The most probable token always stays, however small top_p is (top_p = 0 included);
  top_p >= 1 is off;
- the draw is Gumbel-max over the kept tokens, token = argmax_j x_j - log(-log(u_j)) (lowest
  index on ties), an exact sample from softmax(x) restricted to them, where u_j is the
  counter-based uniform of `kernels.reference.uniform_noise` (murmur3's fmix32 of the token
  index and the row's seed): a draw depends only on its row's logits, parameters and seed.
Rows with T <= 0 are greedy: argmax of the logits, lowest index on ties.

Finding x_k and x_p without sorting. Both are "the largest key t with W(t) >= target", with
W(t) = sum of w_j over the tokens whose key is >= t, keys being the fp32 values mapped to
int32 so that integer order is float order (top-k: w = 1, target = k). A search keeps a
bracket [lo, hi] of element keys holding t; each pass weighs PROBES evenly spaced candidates
in it at once, keeps the sub-bracket where the criterion flips and snaps its ends to the
element keys inside it. The bracket shrinks at least PROBES-fold per pass, so PASSES = 8
passes always end on one key; real rows usually need 3 to 5.

Spread over the GPU. When the batch alone fills the GPU, one program owns one row and runs
everything in one launch (`_sample_rows_kernel`): statistics, both searches with each pass's
partials in registers, the draw. A small batch would leave most SMs idle that way, so there
each row's vocabulary is cut into chunks, one program each, and a pass is one launch in which
every program reduces the previous pass's per-chunk partials (integers, in a fixed order),
derives the row's bracket and weighs its chunk at the new candidates. That schedule is fixed,
19 launches: statistics, 8 top-k passes, 8 top-p passes, the draw (per-chunk Gumbel maxima)
and the pick. Both layouts give the same tokens (integer sums do not depend on the
chunking); their grids depend on shapes only (no host sync), and a row whose search has
converged, or that uses no filter, skips the work. In Triton's interpreter a program takes a
stack of rows (`plan`), which the per-row vectors below carry on a GPU too, with one row.
"""
import dataclasses

import torch
import triton
import triton.language as tl

from . import _alloc, _checks, _launch

BLOCK = 1024  # tile of the statistics and draw scans
SEARCH_BLOCK = 256  # tile of the probe scans, whose working set is PROBES times larger
PROBES = 16
PASSES = 8  # 32 key bits / log2(PROBES): enough for any bracket
MIN_CHUNK = 2048  # the least vocabulary a program scans
INT32_MAX = tl.constexpr(2**31 - 1)
INT32_MIN = tl.constexpr(-(2**31))
WEIGHT_SCALE = tl.constexpr(4294967296.0)  # 2^32: w = floor(exp(x - M) * 2^32)


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """How `sample` spreads [B, V] over programs: `rows` rows per program (1 on a GPU), each
    row's vocabulary in chunks of `chunk` entries (a multiple of `block`), scanned in tiles of
    `block` (statistics, draw) and `search_block` (the probe passes)."""

    rows: int
    chunk: int
    block: int
    search_block: int
    chunk_block: int = 16  # per-chunk partials reduced this many chunks at a time


def plan(batch: int, vocab: int, device) -> SamplePlan:
    """One program per row (the single-launch kernel) once the batch alone fills the SMs;
    below that about four programs per SM, in chunks of MIN_CHUNK entries at least.

    The interpreter pays per operation (and per call of a jitted helper) rather than per
    element, so there a program takes a stack of whole rows, and the probe passes use tiles
    as large as the statistics' (about 2^20 elements per [rows, tile, PROBES] tile).
    """
    block = min(BLOCK, triton.next_power_of_2(vocab))
    whole_row = triton.cdiv(vocab, block) * block
    if _launch.INTERPRETED:
        rows = min(triton.next_power_of_2(max(batch, 1)), max(1, 2**20 // (block * PROBES)))
        return SamplePlan(rows, whole_row, block, block, chunk_block=1)
    sms = _launch.sm_count(torch.device(device))
    chunks_wanted = 1 if batch >= sms else triton.cdiv(4 * sms, max(batch, 1))
    chunk = triton.cdiv(triton.cdiv(vocab, chunks_wanted), block) * block
    return SamplePlan(1, min(max(chunk, MIN_CHUNK), whole_row), block, min(SEARCH_BLOCK, block))


# ---- per-element math shared by the kernels ----

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
def _any(flags):
    return tl.sum(flags.to(tl.int32), axis=0) > 0


# ---- per-row state shared by the kernels ----

@triton.jit
def _rows(batch, ROWS: tl.constexpr):
    """This program's row slots, and the rows they read (slots past the batch redo its last row)."""
    slots = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    return slots, tl.minimum(slots, batch - 1)


@triton.jit
def _row_params(temperature_ptr, top_k_ptr, top_p_ptr, rows, vocab):
    """(T used for x, greedy, top-k on, top-p on, k, top_p) per row; greedy rows use T = 1."""
    raw = tl.load(temperature_ptr + rows)
    top_k = tl.load(top_k_ptr + rows)
    top_p = tl.load(top_p_ptr + rows)
    greedy = ~(raw > 0)
    temperature = tl.where(greedy, 1.0, tl.maximum(raw, 1e-6))
    use_top_k = ~greedy & (top_k > 0) & (top_k < vocab)
    use_top_p = ~greedy & (top_p < 1.0)
    return temperature, greedy, use_top_k, use_top_p, top_k, top_p


@triton.jit
def _row_extrema(max_ptr, min_ptr, rows, num_chunks, ROWS: tl.constexpr, CHUNK_BLOCK: tl.constexpr):
    """(max x, min x) per row from the statistics kernel's per-chunk partials [B, C]."""
    x_max = tl.full([ROWS], float("-inf"), tl.float32)
    x_min = tl.full([ROWS], float("inf"), tl.float32)
    for c0 in range(0, num_chunks, CHUNK_BLOCK):
        chunks = c0 + tl.arange(0, CHUNK_BLOCK)
        offs = rows[:, None] * num_chunks + chunks[None, :]
        ok = (chunks < num_chunks)[None, :]
        x_max = tl.maximum(x_max, tl.max(tl.load(max_ptr + offs, mask=ok, other=float("-inf")), axis=1))
        x_min = tl.minimum(x_min, tl.min(tl.load(min_ptr + offs, mask=ok, other=float("inf")), axis=1))
    return x_max, x_min


@triton.jit
def _probe_keys(lo, hi, PROBES: tl.constexpr):
    """[ROWS, PROBES] candidates evenly spaced over [lo, hi] (probe 0 = lo), and which are in it."""
    probe_ids = tl.arange(0, PROBES).to(tl.int64)
    step = (hi.to(tl.int64) - lo + PROBES) // PROBES
    probes = lo[:, None] + probe_ids[None, :] * step[:, None]
    return tl.minimum(probes, hi[:, None]).to(tl.int32), probes <= hi[:, None]


@triton.jit
def _reduce_partials(mass_ptr, above_ptr, below_ptr, rows, active, num_chunks,
                     ROWS: tl.constexpr, PROBES: tl.constexpr, CHUNK_BLOCK: tl.constexpr):
    """Per row and probe over all chunks: W (sum), the smallest key at or above, the largest below."""
    probe_ids = tl.arange(0, PROBES)
    mass = tl.zeros([ROWS, PROBES], tl.int64)
    min_above = tl.full([ROWS, PROBES], INT32_MAX, tl.int32)
    max_below = tl.full([ROWS, PROBES], INT32_MIN, tl.int32)
    for c0 in range(0, num_chunks, CHUNK_BLOCK):
        chunks = c0 + tl.arange(0, CHUNK_BLOCK)
        offs = ((rows[:, None, None] * num_chunks + chunks[None, :, None]) * PROBES
                + probe_ids[None, None, :])
        ok = active[:, None, None] & (chunks < num_chunks)[None, :, None]
        mass += tl.sum(tl.load(mass_ptr + offs, mask=ok, other=0), axis=1)
        min_above = tl.minimum(min_above, tl.min(tl.load(above_ptr + offs, mask=ok, other=INT32_MAX), axis=1))
        max_below = tl.maximum(max_below, tl.max(tl.load(below_ptr + offs, mask=ok, other=INT32_MIN), axis=1))
    return mass, min_above, max_below


@triton.jit
def _narrow(lo, hi, mass, min_above, max_below, target, PROBES: tl.constexpr):
    """The bracket after one pass. W only falls as t grows, so the probes that meet the target
    form a prefix: t lies between the last that meets it and the first that does not, each
    snapped to the element keys next to it. Rows with lo == hi are left alone."""
    _, in_range = _probe_keys(lo, hi, PROBES)
    meets = (mass.to(tl.float64) >= target[:, None]) & in_range
    lo_next = tl.maximum(lo, tl.max(tl.where(meets, min_above, INT32_MIN), axis=1))
    hi_next = tl.minimum(hi, tl.min(tl.where(in_range & ~meets, max_below, INT32_MAX), axis=1))
    active = lo < hi
    return tl.where(active, lo_next, lo), tl.where(active, hi_next, hi)


@triton.jit
def _probe_scan(row_ptrs, start, end, temperature, lo, hi, by_mass, x_floor, x_max,
                ROWS: tl.constexpr, BLOCK: tl.constexpr, PROBES: tl.constexpr):
    """Partials of one chunk [start, end) at the probes of [lo, hi]; see `_reduce_partials`.

    Weights: 1 per token (top-k), or w for the tokens of the top-k set x >= x_floor (top-p).
    Per-lane partials across tiles, reduced once: no cross-warp reduction per tile.
    """
    probe_keys, _ = _probe_keys(lo, hi, PROBES)
    mass = tl.zeros([ROWS, BLOCK, PROBES], tl.int64)
    min_above = tl.full([ROWS, BLOCK, PROBES], INT32_MAX, tl.int32)
    max_below = tl.full([ROWS, BLOCK, PROBES], INT32_MIN, tl.int32)
    for tile in range(start, end, BLOCK):
        # _scaled_logits, _weight and _order_key written out: the interpreter pays per call.
        offs = tile + tl.arange(0, BLOCK)
        valid = (offs < end)[None, :]
        logits = tl.load(row_ptrs[:, None] + offs[None, :], mask=valid, other=float("-inf")).to(tl.float32)
        x = tl.div_rn(logits, temperature[:, None])
        counted = valid & (x >= x_floor[:, None])
        weight = (tl.exp(x - x_max[:, None]) * WEIGHT_SCALE).to(tl.int64)
        weight = tl.where(counted, tl.where(by_mass[:, None], weight, 1), 0)
        bits = x.to(tl.int32, bitcast=True)
        key = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
        above = key[:, :, None] >= probe_keys[:, None, :]
        mass += tl.where(above, weight[:, :, None], 0)
        min_above = tl.minimum(min_above, tl.where(above & counted[:, :, None], key[:, :, None], INT32_MAX))
        max_below = tl.maximum(max_below, tl.where(above | ~counted[:, :, None], INT32_MIN, key[:, :, None]))
    return tl.sum(mass, axis=1), tl.min(min_above, axis=1), tl.max(max_below, axis=1)


@triton.jit
def _partial_offsets(slot, rows, chunk, batch, num_chunks, PROBES: tl.constexpr):
    """[ROWS, PROBES] offsets of this program's partials in a [2, B, C, PROBES] buffer."""
    return (((slot * batch + rows) * num_chunks + chunk)[:, None] * PROBES
            + tl.arange(0, PROBES)[None, :])


@triton.jit
def _chunk_stats(row_ptrs, start, end, temperature, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Per row over [start, end): max x, min x and the first index of the max."""
    x_max = tl.full([ROWS], float("-inf"), tl.float32)
    x_min = tl.full([ROWS], float("inf"), tl.float32)
    arg = tl.zeros([ROWS], tl.int32)
    for tile in range(start, end, BLOCK):
        offs = tile + tl.arange(0, BLOCK)
        valid = (offs < end)[None, :]
        x = _scaled_logits(row_ptrs, valid, offs, temperature)
        tile_max, tile_arg = tl.max(x, axis=1, return_indices=True, return_indices_tie_break_left=True)
        # Strictly greater: an equal max in a later tile keeps the earlier (lower) index.
        arg = tl.where(tile_max > x_max, tile + tile_arg, arg)
        x_max = tl.maximum(x_max, tile_max)
        x_min = tl.minimum(x_min, tl.min(tl.where(valid, x, float("inf")), axis=1))
    return x_max, x_min, arg


@triton.jit
def _chunk_draw(row_ptrs, start, end, temperature, seeds, x_cut, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Per row over [start, end): the best Gumbel score x - log(-log(u)) among x >= x_cut, and
    its first index."""
    best = tl.full([ROWS], float("-inf"), tl.float32)
    arg = tl.zeros([ROWS], tl.int32)
    for tile in range(start, end, BLOCK):
        offs = tile + tl.arange(0, BLOCK)
        valid = (offs < end)[None, :]
        x = _scaled_logits(row_ptrs, valid, offs, temperature)
        u = _uniform(seeds[:, None], offs[None, :])
        score = tl.where(x >= x_cut[:, None], x + -tl.log(-tl.log(u)), float("-inf"))
        tile_best, tile_arg = tl.max(score, axis=1, return_indices=True, return_indices_tie_break_left=True)
        arg = tl.where(tile_best > best, tile + tile_arg, arg)
        best = tl.maximum(best, tile_best)
    return best, arg


@triton.jit
def _top_p_start(kth, use_top_k, use_top_p, x_max):
    """Once x_k is known (its key `kth`): x_floor (-inf without top-k) and the top-p bracket
    [key(x_floor), key(M)] (empty for rows without top-p)."""
    x_floor = tl.where(use_top_k, _key_value(kth), float("-inf"))
    return x_floor, tl.where(use_top_p, _order_key(x_floor), 0), tl.where(use_top_p, _order_key(x_max), 0)


@triton.jit
def _target(step, top_k, top_p, total, PASSES: tl.constexpr):
    """W must reach k in the top-k passes, top_p * S in the top-p ones (fp64)."""
    return tl.where(step < PASSES, top_k.to(tl.float64), top_p.to(tl.float64) * total.to(tl.float64))


@triton.jit
def _first_column(mass):
    """mass[:, 0], the weight of the whole bracket (probe 0 is lo)."""
    return tl.sum(tl.where(tl.arange(0, mass.shape[1])[None, :] == 0, mass, 0), axis=1)


# ---- one program per row: the whole row in one launch ----

# Batch-dependent sizes stay runtime values: one compiled kernel serves every batch.
@triton.jit(do_not_specialize=["batch"])
def _sample_rows_kernel(logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, seeds_ptr, out_ptr,
                        batch, vocab, stride_row, ROWS: tl.constexpr, BLOCK: tl.constexpr,
                        SEARCH_BLOCK: tl.constexpr, PROBES: tl.constexpr, PASSES: tl.constexpr):
    """Statistics, both searches (each pass's partials stay in registers) and the draw."""
    slots, rows = _rows(batch, ROWS)
    temperature, greedy, use_top_k, use_top_p, top_k, top_p = _row_params(
        temperature_ptr, top_k_ptr, top_p_ptr, rows, vocab)
    row_ptrs = logits_ptr + rows.to(tl.int64) * stride_row
    x_max, x_min, token = _chunk_stats(row_ptrs, 0, vocab, temperature, ROWS, BLOCK)
    if _any(~greedy):
        lo = tl.where(use_top_k, _order_key(x_min), 0)
        hi = tl.where(use_top_k, _order_key(x_max), 0)
        x_floor = tl.full([ROWS], float("-inf"), tl.float32)
        total = tl.zeros([ROWS], tl.int64)
        for step in range(2 * PASSES):
            if _any(lo < hi):
                by_mass = (tl.zeros([ROWS], tl.int32) + step) >= PASSES
                mass, min_above, max_below = _probe_scan(row_ptrs, 0, vocab, temperature, lo, hi, by_mass,
                                                         x_floor, x_max, ROWS, SEARCH_BLOCK, PROBES)
                if step == PASSES:
                    total = _first_column(mass)
                target = _target(step, top_k, top_p, total, PASSES)
                lo, hi = _narrow(lo, hi, mass, min_above, max_below, target, PROBES)
            if step == PASSES - 1:
                x_floor, lo, hi = _top_p_start(lo, use_top_k, use_top_p, x_max)
        x_cut = tl.where(use_top_p, _key_value(lo), x_floor)
        seeds = tl.load(seeds_ptr + rows)
        _, drawn = _chunk_draw(row_ptrs, 0, vocab, temperature, seeds, x_cut, ROWS, BLOCK)
        token = tl.where(greedy, token, drawn)
    tl.store(out_ptr + slots, token.to(tl.int64), mask=slots < batch)


# ---- several programs per row: one launch per pass, partials through memory ----

@triton.jit(do_not_specialize=["batch", "chunk", "num_chunks"])
def _stats_kernel(logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, max_ptr, min_ptr, arg_ptr,
                  batch, vocab, stride_row, chunk, num_chunks, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Per row and chunk: max x, min x and the first index of the max, [B, C] each."""
    slots, rows = _rows(batch, ROWS)
    c = tl.program_id(1)
    temperature, _, _, _, _, _ = _row_params(temperature_ptr, top_k_ptr, top_p_ptr, rows, vocab)
    row_ptrs = logits_ptr + rows.to(tl.int64) * stride_row
    start = c * chunk
    x_max, x_min, arg = _chunk_stats(row_ptrs, start, tl.minimum(start + chunk, vocab), temperature, ROWS, BLOCK)
    out = slots * num_chunks + c
    ok = slots < batch
    tl.store(max_ptr + out, x_max, mask=ok)
    tl.store(min_ptr + out, x_min, mask=ok)
    tl.store(arg_ptr + out, arg, mask=ok)


@triton.jit(do_not_specialize=["step", "batch", "chunk", "num_chunks"])  # one kernel for all passes
def _search_kernel(logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, max_ptr, min_ptr,
                   bounds_ptr, mass_ptr, above_ptr, below_ptr, kth_ptr, total_ptr,
                   step, batch, vocab, stride_row, chunk, num_chunks,
                   ROWS: tl.constexpr, BLOCK: tl.constexpr, PROBES: tl.constexpr,
                   PASSES: tl.constexpr, CHUNK_BLOCK: tl.constexpr):
    """Pass `step` (0 .. 2 PASSES - 1; below PASSES for x_k, then for x_p). It first narrows the
    bracket with the previous pass's partials (slot (step + 1) % 2 of bounds [2, 2, B] and of
    the partials [2, B, C, PROBES]), then weighs its chunk at the new probes (slot step % 2).
    Chunk 0's program keeps the row state: the bracket, x_k's key and S."""
    slots, rows = _rows(batch, ROWS)
    c = tl.program_id(1)
    temperature, _, use_top_k, use_top_p, top_k, top_p = _row_params(
        temperature_ptr, top_k_ptr, top_p_ptr, rows, vocab)
    x_max, x_min = _row_extrema(max_ptr, min_ptr, rows, num_chunks, ROWS, CHUNK_BLOCK)
    prev = (step + 1) % 2
    lo = tl.where(use_top_k, _order_key(x_min), 0)
    hi = tl.where(use_top_k, _order_key(x_max), 0)
    x_floor = tl.full([ROWS], float("-inf"), tl.float32)
    total = tl.zeros([ROWS], tl.int64)
    if step > 0:
        lo = tl.load(bounds_ptr + (prev * 2) * batch + rows)
        hi = tl.load(bounds_ptr + (prev * 2 + 1) * batch + rows)
        if step > PASSES + 1:
            total = tl.load(total_ptr + rows)
        if _any(lo < hi):
            mass, min_above, max_below = _reduce_partials(
                mass_ptr, above_ptr, below_ptr, rows + prev * batch, lo < hi, num_chunks,
                ROWS, PROBES, CHUNK_BLOCK)
            if step == PASSES + 1:  # the first top-p pass weighed the whole bracket
                total = _first_column(mass)
            lo, hi = _narrow(lo, hi, mass, min_above, max_below, _target(step - 1, top_k, top_p, total, PASSES),
                             PROBES)
        if step == PASSES:  # x_k found: the top-p bracket starts over the top-k set
            x_floor, lo, hi = _top_p_start(lo, use_top_k, use_top_p, x_max)
        if step > PASSES:
            x_floor = tl.where(use_top_k, _key_value(tl.load(kth_ptr + rows)), float("-inf"))
    if c == 0:
        ok = slots < batch
        slot = step % 2
        tl.store(bounds_ptr + (slot * 2) * batch + slots, lo, mask=ok)
        tl.store(bounds_ptr + (slot * 2 + 1) * batch + slots, hi, mask=ok)
        if step == PASSES:
            tl.store(kth_ptr + slots, _order_key(x_floor), mask=ok)
        if step == PASSES + 1:
            tl.store(total_ptr + slots, total, mask=ok)
    active = lo < hi
    if _any(active):
        row_ptrs = logits_ptr + rows.to(tl.int64) * stride_row
        start = c * chunk
        by_mass = (tl.zeros([ROWS], tl.int32) + step) >= PASSES
        mass, min_above, max_below = _probe_scan(row_ptrs, start, tl.minimum(start + chunk, vocab), temperature,
                                                 lo, hi, by_mass, x_floor, x_max, ROWS, BLOCK, PROBES)
        offs = _partial_offsets(step % 2, rows, c, batch, num_chunks, PROBES)
        ok = (active & (slots < batch))[:, None]
        tl.store(mass_ptr + offs, mass, mask=ok)
        tl.store(above_ptr + offs, min_above, mask=ok)
        tl.store(below_ptr + offs, max_below, mask=ok)


@triton.jit(do_not_specialize=["batch", "chunk", "num_chunks"])
def _draw_kernel(logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, seeds_ptr, max_ptr, min_ptr,
                 bounds_ptr, mass_ptr, above_ptr, below_ptr, kth_ptr, total_ptr, best_ptr, best_arg_ptr,
                 batch, vocab, stride_row, chunk, num_chunks,
                 ROWS: tl.constexpr, BLOCK: tl.constexpr, PROBES: tl.constexpr,
                 PASSES: tl.constexpr, CHUNK_BLOCK: tl.constexpr):
    """The last top-p narrowing, then per chunk the best Gumbel score among the kept tokens."""
    slots, rows = _rows(batch, ROWS)
    c = tl.program_id(1)
    temperature, _, use_top_k, use_top_p, top_k, top_p = _row_params(
        temperature_ptr, top_k_ptr, top_p_ptr, rows, vocab)
    x_max, _ = _row_extrema(max_ptr, min_ptr, rows, num_chunks, ROWS, CHUNK_BLOCK)
    prev = (2 * PASSES - 1) % 2
    lo = tl.load(bounds_ptr + (prev * 2) * batch + rows)
    hi = tl.load(bounds_ptr + (prev * 2 + 1) * batch + rows)
    if _any(lo < hi):
        mass, min_above, max_below = _reduce_partials(mass_ptr, above_ptr, below_ptr, rows + prev * batch, lo < hi,
                                                      num_chunks, ROWS, PROBES, CHUNK_BLOCK)
        target = _target(2 * PASSES - 1, top_k, top_p, tl.load(total_ptr + rows), PASSES)
        lo, hi = _narrow(lo, hi, mass, min_above, max_below, target, PROBES)
    x_floor = tl.where(use_top_k, _key_value(tl.load(kth_ptr + rows)), float("-inf"))
    x_cut = tl.where(use_top_p, _key_value(lo), x_floor)
    row_ptrs = logits_ptr + rows.to(tl.int64) * stride_row
    start = c * chunk
    best, arg = _chunk_draw(row_ptrs, start, tl.minimum(start + chunk, vocab), temperature,
                            tl.load(seeds_ptr + rows), x_cut, ROWS, BLOCK)
    out = slots * num_chunks + c
    ok = slots < batch
    tl.store(best_ptr + out, best, mask=ok)
    tl.store(best_arg_ptr + out, arg, mask=ok)


@triton.jit(do_not_specialize=["batch", "num_chunks"])
def _pick_kernel(temperature_ptr, top_k_ptr, top_p_ptr, max_ptr, arg_ptr, best_ptr, best_arg_ptr, out_ptr,
                 batch, vocab, num_chunks, ROWS: tl.constexpr, CHUNK_BLOCK: tl.constexpr):
    """Per row: the index held by the first chunk with the largest value (the max x for greedy
    rows, the best Gumbel score otherwise)."""
    slots, rows = _rows(batch, ROWS)
    _, greedy, _, _, _, _ = _row_params(temperature_ptr, top_k_ptr, top_p_ptr, rows, vocab)
    top = tl.full([ROWS], float("-inf"), tl.float32)
    token = tl.zeros([ROWS], tl.int32)
    for c0 in range(0, num_chunks, CHUNK_BLOCK):
        chunks = c0 + tl.arange(0, CHUNK_BLOCK)
        offs = rows[:, None] * num_chunks + chunks[None, :]
        ok = (chunks < num_chunks)[None, :]
        value = tl.where(greedy[:, None], tl.load(max_ptr + offs, mask=ok, other=float("-inf")),
                         tl.load(best_ptr + offs, mask=ok, other=float("-inf")))
        index = tl.where(greedy[:, None], tl.load(arg_ptr + offs, mask=ok, other=0),
                         tl.load(best_arg_ptr + offs, mask=ok, other=0))
        block_top, block_at = tl.max(value, axis=1, return_indices=True, return_indices_tie_break_left=True)
        block_token = tl.sum(tl.where(tl.arange(0, CHUNK_BLOCK)[None, :] == block_at[:, None], index, 0), axis=1)
        token = tl.where(block_top > top, block_token, token)
        top = tl.maximum(top, block_top)
    tl.store(out_ptr + slots, token.to(tl.int64), mask=slots < batch)


def launch(logits, temperature, top_k, top_p, seeds, sample_plan: SamplePlan):
    """`sample` with an explicit plan (tests force several chunks per row in the interpreter)."""
    logits = _launch.unit_stride(logits)
    batch, vocab = logits.shape
    out = _alloc.empty((batch,), torch.int64, logits.device)
    if batch == 0:
        return out
    params = (temperature.contiguous(), top_k.contiguous(), top_p.contiguous())
    seeds = seeds.contiguous()
    p = sample_plan
    num_chunks = triton.cdiv(vocab, p.chunk)
    if num_chunks == 1:
        _sample_rows_kernel[(triton.cdiv(batch, p.rows),)](
            logits, *params, seeds, out, batch, vocab, logits.stride(0),
            ROWS=p.rows, BLOCK=p.block, SEARCH_BLOCK=p.search_block, PROBES=PROBES, PASSES=PASSES, num_warps=8,
        )
        return out
    grid = (triton.cdiv(batch, p.rows), num_chunks)
    dev, empty = logits.device, _alloc.empty
    row_max, row_min = empty((batch, num_chunks), torch.float32, dev), empty((batch, num_chunks), torch.float32, dev)
    row_arg = empty((batch, num_chunks), torch.int32, dev)
    bounds = empty((2, 2, batch), torch.int32, dev)
    partials = (empty((2, batch, num_chunks, PROBES), torch.int64, dev),
                empty((2, batch, num_chunks, PROBES), torch.int32, dev),
                empty((2, batch, num_chunks, PROBES), torch.int32, dev))
    kth, total = empty((batch,), torch.int32, dev), empty((batch,), torch.int64, dev)
    best, best_arg = empty((batch, num_chunks), torch.float32, dev), empty((batch, num_chunks), torch.int32, dev)
    shape = (batch, vocab, logits.stride(0), p.chunk, num_chunks)
    search = dict(PROBES=PROBES, PASSES=PASSES, CHUNK_BLOCK=p.chunk_block, num_warps=8)
    _stats_kernel[grid](logits, *params, row_max, row_min, row_arg, *shape, ROWS=p.rows, BLOCK=p.block,
                        num_warps=8)
    for step in range(2 * PASSES):
        _search_kernel[grid](logits, *params, row_max, row_min, bounds, *partials, kth, total, step, *shape,
                             ROWS=p.rows, BLOCK=p.search_block, **search)
    _draw_kernel[grid](logits, *params, seeds, row_max, row_min, bounds, *partials, kth, total, best, best_arg,
                       *shape, ROWS=p.rows, BLOCK=p.block, **search)
    _pick_kernel[(grid[0],)](*params, row_max, row_arg, best, best_arg, out, batch, vocab, num_chunks,
                             ROWS=p.rows, CHUNK_BLOCK=p.chunk_block)
    return out


@_checks.checked(_checks.check_sample)
def sample(logits, temperature, top_k, top_p, seeds):
    """Draw one token per row, int64 [B], from logits [B, V]; see `kernels.reference.sample`."""
    return launch(logits, temperature, top_k, top_p, seeds, plan(*logits.shape, logits.device))
