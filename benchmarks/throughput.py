"""Throughput against batch size, and latency under Poisson arrivals, engine vs HF.

Every engine number has its HF baseline measured in the same run on the same model,
prompts and token counts; ratios are engine tokens/s over baseline tokens/s.
"""
import random
import statistics
import time

from engine import MaskPredictParams, SamplingParams

from . import hf_baselines
from .timing import median_seconds, paired_median_seconds


def _generated(outputs):
    return sum(len(o.token_ids) for o in outputs)


def _point(engine_fn, hf_fn, device, reps):
    """Engine and baseline timed alternately; returns their outputs and median seconds."""
    outputs, hf_outputs = [], []
    if hf_fn is None:
        seconds = median_seconds(lambda: outputs.append(engine_fn()), device, warmup=1, reps=reps)
        return outputs[-1], seconds, None, None
    seconds, hf_seconds = paired_median_seconds(
        lambda: outputs.append(engine_fn()), lambda: hf_outputs.append(hf_fn()), device, warmup=1, reps=reps)
    return outputs[-1], seconds, hf_outputs[-1], hf_seconds


def _row(row, outputs, seconds, hf_tokens, hf_seconds):
    tokens = _generated(outputs)
    row.update(seconds=seconds, generated_tokens=tokens, tokens_per_s=tokens / seconds)
    if hf_seconds is not None:
        row.update(hf_seconds=hf_seconds, hf_generated_tokens=hf_tokens, hf_tokens_per_s=hf_tokens / hf_seconds,
                   speedup=(tokens / seconds) / (hf_tokens / hf_seconds))
    return row


def ar_point(llm, hf_model, prompt_ids, new_tokens, device, reps):
    """One batch size: engine and HF generate() tokens/s for the same greedy work."""
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    hf_fn = None if hf_model is None else lambda: hf_baselines.hf_generate(hf_model, prompt_ids, new_tokens)
    outputs, seconds, hf_out, hf_seconds = _point(lambda: llm.generate(prompt_ids, params), hf_fn, device, reps)
    row = {"mode": "ar", "batch": len(prompt_ids), "new_tokens": new_tokens}
    return _row(row, outputs, seconds, None if hf_out is None else hf_out.numel(), hf_seconds)


def mp_point(llm, hf_model, tokenizer, prompt_ids, length, iterations, device, reps):
    """One (batch size, T): engine and the HF masked-LM loop tokens/s for the same passes."""
    params = MaskPredictParams(length=length, iterations=iterations)
    hf_fn = None if hf_model is None else (
        lambda: hf_baselines.hf_mask_predict(hf_model, tokenizer, prompt_ids, length, iterations))
    outputs, seconds, hf_out, hf_seconds = _point(lambda: llm.generate(prompt_ids, params), hf_fn, device, reps)
    row = {"mode": "mp", "batch": len(prompt_ids), "length": length, "iterations": iterations,
           "nfe": statistics.mean(o.metrics.nfe for o in outputs)}
    return _row(row, outputs, seconds, None if hf_out is None else hf_out.numel(), hf_seconds)


def percentiles(values, qs=(50, 90, 99)):
    values = sorted(v for v in values if v is not None)
    if not values:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] for q in qs}


def poisson_replay(engine, prompts, params, rate, seed=0):
    """Requests arrive as a Poisson process of `rate` per second, replayed through step().

    Arrival times are drawn up front; before every step the requests whose time has come
    are added (with their true arrival time, so queueing delay counts in TTFT). Returns
    per-request metrics and the achieved throughput.
    """
    rng = random.Random(seed)
    gaps = [rng.expovariate(rate) for _ in prompts]
    start = time.perf_counter()
    arrivals = [start + sum(gaps[: i + 1]) for i in range(len(prompts))]
    pending, finished = list(zip(arrivals, prompts)), {}
    while pending or engine.has_unfinished():
        now = time.perf_counter()
        while pending and pending[0][0] <= now:
            arrival, prompt = pending.pop(0)
            engine.add_request(prompt, params, arrival_time=arrival)
        if not engine.has_unfinished():
            time.sleep(max(0.0, pending[0][0] - time.perf_counter()))
            continue
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = out
    elapsed = time.perf_counter() - start
    metrics = [o.metrics for o in finished.values()]
    tokens = sum(len(o.token_ids) for o in finished.values())
    return {
        "rate": rate,
        "requests": len(finished),
        "seconds": elapsed,
        "generated_tokens": tokens,
        "tokens_per_s": tokens / elapsed,
        "ttft": percentiles([m.ttft for m in metrics]),
        "tpot": percentiles([m.tpot for m in metrics]),
        "e2e": percentiles([m.e2e for m in metrics]),
    }
