"""Wall-clock timing that is honest on both CPU and CUDA: warm-up, then repetitions.

Between the warm-up and the timed calls the heap is settled: collected, and what survives
frozen (gc.freeze). Without it, a full collection that falls inside a timed call walks
every object loaded so far (models, tokenizers, lazily imported modules): measured in the
report's throughput part, one pause of ~80 ms inside one repetition of a batch-64 point,
3.5x that repetition's median. Frozen, a collection inside a timed call walks only what the
timed calls themselves made, which is part of what they cost.
"""
import gc
import statistics
import time

import torch


def _settle(device):
    """The end of a warm-up: queued GPU work done, the heap collected and frozen."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    gc.collect()
    gc.freeze()


def _seconds(fn, device):
    """One timed call of `fn()`; on CUDA, between events recorded around it."""
    if not str(device).startswith("cuda"):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3


def best_seconds(fn, device="cpu", warmup=3, reps=20):
    """The fastest of `reps` timed calls: what a ceiling is (the machine can at least do this),
    and steadier than a median when other work shares the machine."""
    for _ in range(warmup):
        fn()
    _settle(device)
    return min(_seconds(fn, device) for _ in range(reps))


def median_seconds(fn, device="cpu", warmup=2, reps=10, max_seconds=None):
    """Median seconds of one call of `fn()`.

    max_seconds caps the measuring loop (at least 3 reps) so slow paths (Triton's
    interpreter) stay affordable.
    """
    for _ in range(warmup):
        fn()
    _settle(device)
    times, start = [], time.perf_counter()
    for _ in range(reps):
        times.append(_seconds(fn, device))
        if max_seconds is not None and len(times) >= 3 and time.perf_counter() - start > max_seconds:
            break
    return statistics.median(times)


def paired_times(fn_a, fn_b, device="cpu", warmup=1, reps=5, min_seconds=0.0, max_reps=None):
    """Per-repetition seconds of fn_a and fn_b timed alternately (a, b, a, b, ...), after warm-up.

    On a shared machine a slow spell then hits both sides of a repetition alike, so the
    per-repetition ratios a/b are steadier than those of two separate measurements; report the
    ratio of the medians with the spread of the paired ratios. fn_b may be None (a alone).

    At least `reps` repetitions; then more until the timed calls add up to `min_seconds`, at
    most `max_reps` in all. A fixed count gives a fast point a median as noisy as a slow one's
    though it could afford many more repetitions. Measured on the 2-core CPU: with 15
    repetitions per point, a point's ratio of medians moved by ~0.1 between runs of the report;
    with ~4 s per point (15-150 repetitions), the ratios of two runs agreed within 0.02 at 9
    of 16 points, among them the six nearest their targets (ratios 1.05-1.39).
    """
    for _ in range(warmup):
        fn_a()
        if fn_b is not None:
            fn_b()
    _settle(device)
    a_times, b_times, spent = [], [], 0.0
    limit = reps if max_reps is None else max(reps, max_reps)
    while len(a_times) < reps or (len(a_times) < limit and spent < min_seconds):
        a_times.append(_seconds(fn_a, device))
        spent += a_times[-1]
        if fn_b is not None:
            b_times.append(_seconds(fn_b, device))
            spent += b_times[-1]
    return a_times, b_times
