"""The host share of a mask-predict pass: everything a step does outside the model.

    .venv/bin/pytest benchmarks/microbench/test_mask_predict_host.py --benchmark-only

One round is one `Engine.step()` (one pass) of `batch` requests of length 32 on the bundled
CMLM, mid-refinement (all rounds run before the last pass). The benchmark's clock runs only
while the model does not: the model's forward and MLM head (`compute_logits`) and the
reductions over the vocabulary (`ops.confidence_argmax`, and `ops.sample` for sampled
slots: the mask-predict counterpart of the argmax the autoregressive runner computes beside
its LM head) are wrapped with timers whose totals are subtracted from the clock. The
reported times are the executor's own work per pass: building the packed inputs, gathering
and scattering predictions, the rules, the copy to the host and the outputs. `extra_info`
gives the median per running sequence, and the medians per pass of the model and of the
vocabulary reductions beside it.

On CPU the clock is this thread's CPU time (one torch thread, see conftest.py), so time the
thread spends descheduled on a shared machine does not count; on CUDA it is wall time, the
model's time ending at a synchronize.
"""
import statistics
import time
from pathlib import Path

import pytest
import torch

from engine import Engine, MaskPredictParams

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LENGTH, ROUNDS = 32, 20
BATCHES = (1, 64, 256)


class HostClock:
    """A clock that stops inside wrapped functions; `seconds[kind]` totals their time."""

    def __init__(self, clock):
        self.clock = clock
        self.seconds = {"model": 0.0, "vocabulary": 0.0}

    def exclude(self, fn, kind):
        def timed(*args, **kwargs):
            start = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                if DEVICE == "cuda":
                    torch.cuda.synchronize()
                self.seconds[kind] += self.clock() - start
        return timed

    def host_time(self) -> float:
        return self.clock() - sum(self.seconds.values())


CLOCK = HostClock(time.perf_counter if DEVICE == "cuda" else time.thread_time)


def _engine(batch):
    tokens = batch * (LENGTH + 12)
    engine = Engine(str(ASSETS / "cmlm-bert"), device=DEVICE, max_num_seqs=max(batch, 1),
                    max_num_batched_tokens=max(tokens, 4096))
    model, ops = engine.executor.model, engine.executor.ops
    model.forward = CLOCK.exclude(model.forward, "model")
    model.compute_logits = CLOCK.exclude(model.compute_logits, "model")
    ops.confidence_argmax = CLOCK.exclude(ops.confidence_argmax, "vocabulary")
    ops.sample = CLOCK.exclude(ops.sample, "vocabulary")
    words = "the old dog near the river sees a small cat".split()
    for i in range(batch):
        prompt = engine.tokenizer.encode(" ".join(words[: 2 + i % 8]), add_special_tokens=False)
        engine.add_request(prompt, MaskPredictParams(length=LENGTH, iterations=ROUNDS + 4))
    engine.step()  # admission and the first pass
    return engine


@pytest.mark.benchmark(group="mask_predict_host_per_pass", timer=CLOCK.host_time)
@pytest.mark.parametrize("batch", BATCHES)
def test_mask_predict_host_per_pass(benchmark, batch):
    engine = _engine(batch)
    excluded = {kind: [] for kind in CLOCK.seconds}

    def one_pass():
        before = dict(CLOCK.seconds)
        engine.step()
        for kind, times in excluded.items():
            times.append(CLOCK.seconds[kind] - before[kind])

    benchmark.pedantic(one_pass, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(batch=batch, host_us_per_sequence_median=benchmark.stats.stats.median / batch * 1e6)
    for kind, times in excluded.items():
        benchmark.extra_info[f"{kind}_ms_median"] = statistics.median(times) * 1e3
    assert engine.stats()["num_running"] == batch  # every round was a pass over the whole batch
