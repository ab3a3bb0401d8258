"""Part 3 of the report: the roofline, with the workload's own ceilings and a measured fixed cost.

- Ceilings at the workload's sizes: memory bandwidth copying a buffer the size of the model's
  weights, and the matmul rate of the model's MLP shape (hidden x intermediate) at each row
  count a step can have (1 .. 4096 tokens), interpolated in between; each the best of its
  repetitions.
- Every measured throughput point gets its bound (benchmarks/roofline.py, accounted step by
  step from the point's own lengths, frames and passes): the measured time as a fraction of
  it says how far the engine is from the hardware.
- A fixed cost per step (per AR step and per mask-predict pass), measured at batch 1 where the
  bound is negligible, turns the bound into a prediction; predicted crossovers (the batch at
  which AR's tokens/s reach mask-predict's) sit beside the measured ones.
"""
import math
import statistics

import torch

from . import roofline
from .suite import Run
from .timing import best_seconds

MATMUL_ROWS = (1, 4, 16, 64, 256, 1024, 4096)


def workload_ceilings(shape, device, dtype, reps=20):
    """bandwidth (bytes/s) at the weights' size and {rows: FLOP/s} at the MLP's shape, each the
    best of `reps` timings (a ceiling is what the machine can at least do)."""
    numel = max(1024, shape.weight_bytes // 4)
    src = torch.empty(numel, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    copy = 2 * numel * 4 / best_seconds(lambda: dst.copy_(src), device, reps=reps)
    w = torch.randn(shape.hidden, shape.intermediate, device=device).to(dtype)
    rates = {}
    for rows in MATMUL_ROWS:
        x = torch.randn(rows, shape.hidden, device=device).to(dtype)
        seconds = best_seconds(lambda: x @ w, device, reps=reps)
        rates[rows] = 2 * rows * shape.hidden * shape.intermediate / seconds
    return copy, rates


def rate_at(rates, rows):
    """The matmul rate at `rows`, interpolated in log-log between the measured row counts."""
    keys = sorted(rates)
    rows = min(max(rows, keys[0]), keys[-1])
    for lo, hi in zip(keys, keys[1:]):
        if lo <= rows <= hi:
            t = (math.log(rows) - math.log(lo)) / (math.log(hi) - math.log(lo)) if hi > lo else 0.0
            return math.exp(math.log(rates[lo]) + t * (math.log(rates[hi]) - math.log(rates[lo])))
    return rates[keys[-1]]


def _ceilings_at(bandwidth, rates, fixed=0.0):
    return lambda rows: roofline.Ceilings(bandwidth=bandwidth, flops=rate_at(rates, rows), fixed_step=fixed)


def point_bound(row, ar_shape, mp_shape, ceilings_at, prompt):
    if row["mode"] == "ar":
        return roofline.batch_seconds_ar(ar_shape, ceilings_at, prompt, row["generated"])
    return roofline.batch_seconds_mp(mp_shape, ceilings_at, prompt, row["frames"], row["encoder_passes"],
                                     row["length_head"])


def fixed_costs(rows):
    """Seconds per step measured at batch 1: AR's per step (prefill included), mask-predict's
    per pass (length head included), from the cheapest configuration."""
    ar = [r for r in rows if r["mode"] == "ar" and r["batch"] == 1]
    mp = [r for r in rows if r["mode"] == "mp" and r["batch"] == 1]
    ar_cost = statistics.median(r["seconds"]["median"] / max(r["generated"]) for r in ar) if ar else 0.0
    mp_cost = min((r["seconds"]["median"] / r["max_passes"] for r in mp), default=0.0)
    return ar_cost, mp_cost


def roofline_part(run: Run):
    dtype = run.torch_dtype
    bpp = torch.tensor([], dtype=dtype).element_size()
    mp_path = next(iter(run.mlm_paths.values()))
    ar_shape = roofline.ModelShape.from_hf_config(run.llm(run.ar_path).engine.loaded.hf_config, bpp)
    mp_shape = roofline.ModelShape.from_hf_config(run.llm(mp_path).engine.loaded.hf_config, bpp)
    bandwidth, rates = workload_ceilings(ar_shape, run.device, dtype)
    rows = run.results.get("throughput", [])
    prompt = run.results.get("throughput_prompt_tokens", run.sizes.prompt_words)
    ar_fixed, mp_fixed = fixed_costs(rows)
    points = []
    for r in rows:
        shape_fixed = ar_fixed if r["mode"] == "ar" else mp_fixed
        bound = point_bound(r, ar_shape, mp_shape, _ceilings_at(bandwidth, rates), prompt)
        predicted = point_bound(r, ar_shape, mp_shape, _ceilings_at(bandwidth, rates, shape_fixed), prompt)
        measured = r["seconds"]["median"]
        points.append({"mode": r["mode"], "config": r["config"], "batch": r["batch"], "measured_seconds": measured,
                       "bound_seconds": bound, "fraction_of_bound": bound / measured,
                       "predicted_seconds": predicted, "predicted_over_measured": predicted / measured})
    run.results["roofline"] = {
        "bandwidth_gbps": bandwidth / 1e9, "weight_bytes": ar_shape.weight_bytes,
        "matmul_tflops": {str(k): v / 1e12 for k, v in rates.items()},
        "matmul_shape": [ar_shape.hidden, ar_shape.intermediate], "dtype": str(dtype).replace("torch.", ""),
        "fixed_step_seconds": {"ar": ar_fixed, "mp": mp_fixed},
        "ar_shape": vars(ar_shape), "mp_shape": vars(mp_shape), "points": points,
        "crossovers": crossovers(rows, ar_shape, mp_shape, bandwidth, rates, ar_fixed, mp_fixed, prompt),
    }


def crossovers(rows, ar_shape, mp_shape, bandwidth, rates, ar_fixed, mp_fixed, prompt):
    """Per mask-predict configuration: the batch at which AR's tokens/s reach its, predicted
    by the bound alone, by the bound plus the fixed costs, and measured (None: not up to the
    largest batch tried), and the predicted tokens/s curves for the plot."""
    ar_rows = {r["batch"]: r for r in rows if r["mode"] == "ar"}
    if not ar_rows:
        return []
    largest = ar_rows[max(ar_rows)]
    mean_generated = statistics.mean(largest["generated"])
    out = []
    for config in sorted({r["config"] for r in rows if r["mode"] == "mp"}):
        mp_rows = {r["batch"]: r for r in rows if r["mode"] == "mp" and r["config"] == config}
        ref = mp_rows[max(mp_rows)]
        frame, passes = statistics.mean(ref["frames"]), statistics.mean(ref["encoder_passes"])

        def rates_for(fixed_ar, fixed_mp):
            def ar_rate(b):
                gen = [round(mean_generated)] * b
                return sum(gen) / roofline.batch_seconds_ar(ar_shape, _ceilings_at(bandwidth, rates, fixed_ar), prompt, gen)

            def mp_rate(b):
                frames, p = [round(frame)] * b, [round(passes)] * b
                seconds = roofline.batch_seconds_mp(mp_shape, _ceilings_at(bandwidth, rates, fixed_mp), prompt,
                                                    frames, p, ref["length_head"])
                return sum(frames) / seconds
            return ar_rate, mp_rate

        bound_ar, bound_mp = rates_for(0.0, 0.0)
        model_ar, model_mp = rates_for(ar_fixed, mp_fixed)
        common = sorted(set(mp_rows) & set(ar_rows))
        measured = next((b for b in common if ar_rows[b]["tokens_per_s"] >= mp_rows[b]["tokens_per_s"]), None)
        measured_valid = next((b for b in common if ar_rows[b].get("valid_words_per_s", 0)
                               >= mp_rows[b].get("valid_words_per_s", 0)), None)
        curve = [{"batch": 2 ** k, "ar_bound": bound_ar(2 ** k), "mp_bound": bound_mp(2 ** k),
                  "ar_model": model_ar(2 ** k), "mp_model": model_mp(2 ** k)} for k in range(0, 11)]
        out.append({"config": config, "batches_measured": common,
                    "predicted_bound": roofline.crossover_batch(bound_ar, bound_mp, 1024),
                    "predicted_with_fixed_cost": roofline.crossover_batch(model_ar, model_mp, 1024),
                    "measured_tokens": measured, "measured_valid_words": measured_valid, "curve": curve})
    return out
