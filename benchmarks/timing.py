"""Wall-clock timing that is honest on both CPU and CUDA: warm-up, then repetitions."""
import statistics
import time

import torch


def best_seconds(fn, device="cpu", warmup=3, reps=20):
    """The fastest of `reps` timed calls: what a ceiling is (the machine can at least do this),
    and steadier than a median when other work shares the machine."""
    return min(median_seconds(fn, device, warmup=warmup if i == 0 else 0, reps=1) for i in range(reps))


def median_seconds(fn, device="cpu", warmup=2, reps=10, max_seconds=None):
    """Median seconds of one call of `fn()`; CUDA calls are timed with events after a sync.

    max_seconds caps the measuring loop (at least 3 reps) so slow paths (Triton's
    interpreter) stay affordable.
    """
    cuda = str(device).startswith("cuda")
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times, start = [], time.perf_counter()
    for _ in range(reps):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        if max_seconds is not None and len(times) >= 3 and time.perf_counter() - start > max_seconds:
            break
    return statistics.median(times)


def paired_times(fn_a, fn_b, device="cpu", warmup=1, reps=5):
    """Per-repetition seconds of fn_a and fn_b timed alternately (a, b, a, b, ...), after warm-up.

    On a shared machine a slow spell then hits both sides of a repetition alike, so the
    per-repetition ratios a/b are steadier than those of two separate measurements; report the
    ratio of the medians with the spread of the paired ratios. fn_b may be None (a alone).
    """
    for _ in range(warmup):
        fn_a()
        if fn_b is not None:
            fn_b()
    a_times, b_times = [], []
    for _ in range(reps):
        a_times.append(median_seconds(fn_a, device, warmup=0, reps=1))
        if fn_b is not None:
            b_times.append(median_seconds(fn_b, device, warmup=0, reps=1))
    return a_times, b_times
