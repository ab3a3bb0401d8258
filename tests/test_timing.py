"""The benchmarks' timers start their timed calls from a settled heap (benchmarks/timing.py)."""
import gc

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
