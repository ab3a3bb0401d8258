"""The benchmarks' timers start their timed calls from a settled heap (benchmarks/timing.py)."""
import gc
import time

import pytest

from benchmarks.timing import best_seconds, median_seconds, paired_times


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # what the timers froze goes back to the collector


@pytest.mark.parametrize("timer, warmup_calls, timed_calls", [
    (lambda fn: paired_times(fn, fn, warmup=1, reps=2), 2, 4),
    (lambda fn: median_seconds(fn, warmup=1, reps=2), 1, 2),
    (lambda fn: best_seconds(fn, warmup=1, reps=2), 1, 2),
])
def test_objects_alive_before_the_timed_calls_are_frozen(unfrozen, timer, warmup_calls, timed_calls):
    alive = [[i] for i in range(20_000)]  # tracked objects that a full collection would walk
    frozen = []  # the frozen-object count seen by each call
    timer(lambda: frozen.append(gc.get_freeze_count()))
    assert frozen[:warmup_calls] == [0] * warmup_calls
    assert len(frozen) == warmup_calls + timed_calls and min(frozen[warmup_calls:]) >= len(alive)


def test_paired_repetitions_go_on_until_the_time_budget_within_the_cap():
    def nap():
        time.sleep(0.002)

    a, b = paired_times(nap, nap, warmup=0, reps=2, min_seconds=0.05, max_reps=1000)
    assert len(a) == len(b) > 2 and sum(a) + sum(b) >= 0.05
    a, b = paired_times(nap, nap, warmup=0, reps=2, min_seconds=100.0, max_reps=5)
    assert len(a) == len(b) == 5
    a, b = paired_times(nap, None, warmup=0, reps=3, min_seconds=100.0)  # no cap given: reps
    assert len(a) == 3 and b == []
