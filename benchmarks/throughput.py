"""Timed batches (engine against its HF baseline) and latency under Poisson arrivals.

`timed_point` runs the engine and the baseline on the same batch alternately, after warm-up,
and returns every repetition's seconds: the report gives medians, the ratio of the medians and
the spread of the per-repetition paired ratios. `time_split` repeats the pair
with timers inside both models' calls, to show how much of each side's time is the model and
how much its own work around it. `poisson_replay` replays arrivals through
`Engine.step()`; a request may take several stages (a masked model's length head, then its
frame), each stage's request added when the previous one finishes, all timed from the
original arrival.
"""
import random
import statistics
import time

from . import stats
from .timing import paired_times


def timed_point(engine_fn, baseline_fn, device, warmup, reps, min_seconds=0.0, max_reps=None):
    """(last engine result, last baseline result, summary dict) of alternating timed runs
    (at least `reps`, more up to `max_reps` until they add up to `min_seconds`: paired_times)."""
    results = {}

    def run(key, fn):
        results[key] = fn()

    engine_times, hf_times = paired_times(lambda: run("engine", engine_fn),
                                          None if baseline_fn is None else (lambda: run("hf", baseline_fn)),
                                          device, warmup, reps, min_seconds, max_reps)
    summary = {"seconds": stats.spread(engine_times)}
    if hf_times:
        ratios = [h / e for e, h in zip(engine_times, hf_times)]
        hf = stats.spread(hf_times)
        # engine speed over the baseline's: the ratio of the median times
        summary.update(hf_seconds=hf, speedup=hf["median"] / summary["seconds"]["median"],
                       speedup_paired=stats.spread(ratios))
    return results.get("engine"), results.get("hf"), summary


class CallClock:
    """Seconds spent inside some methods of some objects, e.g. [(model, "forward")]: while
    active, a timing wrapper is an instance attribute shadowing each method. Host time only,
    so it measures a model's calls on CPU; on CUDA it would need a synchronisation per call."""

    def __init__(self, methods):
        self.methods, self.seconds = list(methods), 0.0

    def __enter__(self):
        self.saved = [(obj, name, obj.__dict__.get(name)) for obj, name in self.methods]
        for obj, name in self.methods:
            setattr(obj, name, self._timed(getattr(obj, name)))
        return self

    def _timed(self, method):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed

    def __exit__(self, *exc):
        for obj, name, before in self.saved:
            if before is None:
                delattr(obj, name)
            else:
                setattr(obj, name, before)


def time_split(engine_fn, baseline_fn, engine_methods, baseline_methods, reps):
    """{"engine": {"model": s, "rest": s}, "hf": {...}}: medians over `reps` alternating runs of
    the seconds inside the model methods and of everything else (CPU; see CallClock)."""
    runs = {"engine": [], "hf": []}
    with CallClock(engine_methods) as engine_clock, CallClock(baseline_methods) as hf_clock:
        for _ in range(reps):
            for key, fn, clock in (("engine", engine_fn, engine_clock), ("hf", baseline_fn, hf_clock)):
                clock.seconds = 0.0
                start = time.perf_counter()
                fn()
                total = time.perf_counter() - start
                runs[key].append((clock.seconds, total - clock.seconds))
    return {key: {"model": statistics.median(m for m, _ in v), "rest": statistics.median(r for _, r in v)}
            for key, v in runs.items()}


def percentiles(values, qs=(50, 90, 99)):
    values = sorted(v for v in values if v is not None)
    if not values:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] for q in qs}


def poisson_replay(engine, prompts, stages, rate, seed=0):
    """Requests arrive as a Poisson process of `rate` per second, replayed through step().

    stages: functions; stages[0](i) gives request i's first params, stages[k](i, output) the
    next stage's params from the previous stage's finished output. Arrival times are drawn up
    front; every stage is added with the request's true arrival time, so queueing and earlier
    stages count in its TTFT and end-to-end time. Returns the final stages' metrics.
    """
    rng = random.Random(seed)
    start = time.perf_counter()
    arrivals, t = [], start
    for _ in prompts:
        t += rng.expovariate(rate)
        arrivals.append(t)
    pending, stage_of, owner, finished = list(range(len(prompts))), {}, {}, {}

    def add(i, params):
        rid = engine.add_request(prompts[i], params, arrival_time=arrivals[i])
        owner[rid] = i
        return rid

    while pending or engine.has_unfinished():
        now = time.perf_counter()
        while pending and arrivals[pending[0]] <= now:
            i = pending.pop(0)
            stage_of[i] = 0
            add(i, stages[0](i))
        if not engine.has_unfinished():
            time.sleep(max(0.0, arrivals[pending[0]] - time.perf_counter()))
            continue
        for out in engine.step():
            if not out.finished:
                continue
            i = owner[out.request_id]
            stage_of[i] += 1
            if stage_of[i] < len(stages):
                add(i, stages[stage_of[i]](i, out))
            else:
                finished[i] = out
    elapsed = time.perf_counter() - start
    metrics = [o.metrics for o in finished.values()]
    return {
        "rate": rate,
        "requests": len(finished),
        "seconds": elapsed,
        "generated_tokens": sum(len(o.token_ids) for o in finished.values()),
        "ttft": percentiles([m.ttft for m in metrics]),
        "tpot": percentiles([m.tpot for m in metrics]),
        "e2e": percentiles([m.e2e for m in metrics]),
    }


def ar_fixed_point(llm, hf_model, prompt_ids, new_tokens, device, reps):
    """Engine and HF generate() forced to exactly `new_tokens` per row (eos ignored): the fixed
    work that random-weight models (benchmarks/scale_check.py) need."""
    from engine import SamplingParams

    from .hf_baselines import hf_generate_fixed

    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    outs, hf_out, summary = timed_point(lambda: llm.generate(prompt_ids, params),
                                        lambda: hf_generate_fixed(hf_model, prompt_ids, new_tokens), device, 1, reps)
    tokens, hf_tokens = sum(len(o.token_ids) for o in outs), hf_out.numel()
    seconds, hf_seconds = summary["seconds"]["median"], summary["hf_seconds"]["median"]
    return {"mode": "ar", "batch": len(prompt_ids), "new_tokens": new_tokens, "seconds": seconds,
            "generated_tokens": tokens, "tokens_per_s": tokens / seconds, "hf_seconds": hf_seconds,
            "hf_generated_tokens": hf_tokens, "hf_tokens_per_s": hf_tokens / hf_seconds,
            "speedup": summary["speedup"], "speedup_paired": summary["speedup_paired"]}
