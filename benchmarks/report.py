"""report.md from a results dict: tables, plots, and sentences that follow from the numbers.

No sentence is pre-written. Each conclusion is a function of the results that returns its
sentence only when the numbers support it: a comparison is stated as a win only when the
intervals (Wilson for validity, the interquartile range of repetitions for times) do not
overlap, and as "indistinguishable" otherwise; a bound-type claim (memory- or compute-bound)
compares the measured intensity with the measured ridge. A report built from contradicting
numbers therefore prints the other sentence, or none.
"""
from . import speculative_report, stats
from .roofline_part import rate_at


def _fmt(x, digits=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _table(rows, columns):
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(fn(r) if callable(fn) else r.get(fn)) for _, fn in columns) + " |")
    return "\n".join(lines)


def pct(p):
    return stats.proportion_text(p)


def _spread(s, digits=3):
    return f"{s['median']:.{digits}g} ({s['q1']:.{digits}g}-{s['q3']:.{digits}g})"


# ---- comparisons that decide which sentence is true ------------------------------------------

def compare_intervals(a, b):
    """'above', 'below' or 'overlap': interval a = (lo, hi) against interval b."""
    if a[0] > b[1]:
        return "above"
    if a[1] < b[0]:
        return "below"
    return "overlap"


def _validity_interval(row):
    return row["validity"]["lo"], row["validity"]["hi"]


# ---- quality ------------------------------------------------------------------------------

def quality_sentences(q):
    rows = q["pooled"]
    if not rows or "validity" not in rows[0]:
        return []
    out = []
    ar = [r for r in rows if r["kind"] == "ar"]
    mp = [r for r in rows if r["kind"] != "ar"]
    for r in ar:
        seeds = f" pooled over {r['seeds']} seeds (per seed {min(r['validity_per_seed']):.0%}-{max(r['validity_per_seed']):.0%})" \
            if r["seeds"] > 1 else ""
        out.append(f"{r['model']} {r['config']}: {pct(r['validity'])} of {r['validity']['n']} continuations are valid"
                   f"{seeds}, {r['mean_words']:.1f} words on average.")
    ref = q.get("reference")
    sampled = next((r for r in ar if r["temperature"] == 1.0), None)
    for model in dict.fromkeys(r["model"] for r in mp):
        mine = [r for r in mp if r["model"] == model and not r["config"].endswith("oracle frame")]
        best = max(mine, key=lambda r: (r["validity"]["value"], -r["mean_passes"]))
        out.append(f"{model}: the most valid configuration is {best['config']}, {pct(best['validity'])}, "
                   f"{best['mean_passes']:.1f} passes and {best['mean_words']:.1f} words on average.")
        out += _passes_sentence(model, mine)
        if sampled:
            out.append(_against(sampled, best))
        oracle = next((r for r in mp if r["model"] == model and r["config"].endswith("oracle frame")), None)
        t_n = next((r for r in mine if r["config"] == "T=N"), None)
        if oracle and t_n:
            relation = {"above": "more valid than", "below": "less valid than",
                        "overlap": "indistinguishable from"}[compare_intervals(_validity_interval(oracle), _validity_interval(t_n))]
            out.append(f"{model}: with the reference's frame (a diagnostic), T=N is {pct(oracle['validity'])}, "
                       f"{relation} T=N with its own length head ({pct(t_n['validity'])}).")
    if ref:
        lengths = ", ".join(f"{r['model']} {r['config']} {r['mean_words']:.1f} (TV {r['length_tv']:.2f})"
                            for r in rows if r["config"] in ("AR sampled, temp 1", "T=N", "L2R sampled, temp 1"))
        out.append(f"Output lengths, mean words against the held-out continuations' {ref['mean_words']:.1f} "
                   f"(TV: total-variation distance of the length histograms): {lengths}.")
    return out


def _passes_sentence(model, rows):
    """How validity moves from the fewest to the most passes, stated only beyond the intervals."""
    scheduled = sorted((r for r in rows if r["kind"] == "mp" and r["passes_setting"].isdigit()),
                       key=lambda r: int(r["passes_setting"]))
    full = next((r for r in rows if r["config"] == "T=N"), None)
    if not scheduled or not full:
        return []
    first = scheduled[0]
    relation = compare_intervals(_validity_interval(full), _validity_interval(first))
    verb = {"above": "rises", "below": "falls", "overlap": "does not move beyond its intervals"}[relation]
    return [f"{model}: validity {verb} from {first['config']} ({pct(first['validity'])}) to one token per pass, "
            f"T=N ({pct(full['validity'])})."]


def _against(ar, mp):
    relation = compare_intervals(_validity_interval(mp), _validity_interval(ar))
    if relation == "below":
        return (f"{ar['model']} sampled at temperature 1 ({pct(ar['validity'])}) is more valid than {mp['model']}'s "
                f"most valid configuration ({mp['config']}, {pct(mp['validity'])}).")
    if relation == "above":
        return (f"{mp['model']} {mp['config']} ({pct(mp['validity'])}) is more valid than {ar['model']} sampled at "
                f"temperature 1 ({pct(ar['validity'])}).")
    return (f"{mp['model']} {mp['config']} ({pct(mp['validity'])}) and {ar['model']} sampled at temperature 1 "
            f"({pct(ar['validity'])}) are indistinguishable at these sample sizes.")


# ---- throughput -----------------------------------------------------------------------------

def speed_sentences(rows):
    out = []
    for mode, baseline in (("ar", "HF generate()"), ("mp", "the plain HF masked-LM loop")):
        mine = [r for r in rows if r["mode"] == mode and "speedup" in r]
        if not mine:
            continue
        faster = [r for r in mine if r["speedup_paired"]["min"] > 1]
        slower = [r for r in mine if r["speedup_paired"]["max"] < 1]
        desc = lambda rs: ", ".join(f"{r['config']} at batch {r['batch']}" for r in rs)  # noqa: E731
        parts = []
        if faster:
            parts.append(f"faster than {baseline} in every repetition for {desc(faster)}")
        if slower:
            parts.append(f"slower in every repetition for {desc(slower)}")
        rest = len(mine) - len(faster) - len(slower)
        if rest:
            parts.append(f"within the spread of its repetitions at the other {rest} points")
        out.append(f"Engine {mode.upper()}: " + "; ".join(parts) + ".")
    return out


# The design's targets for engine/HF on a CPU (README, "Latest results"):
# (mode, the smallest and the largest batch a target covers (None: no limit), the ratio to reach)
CPU_TARGETS = (("ar", 1, 15, 1.0), ("ar", 16, None, 1.3), ("mp", 1, 15, 1.0), ("mp", 16, None, 1.2))


def cpu_targets(rows):
    """One row per CPU target with measured points: how many points' median ratio reaches it,
    and the lowest of them with its paired range."""
    out = []
    for mode, smallest, largest, target in CPU_TARGETS:
        points = [r for r in rows if r["mode"] == mode and "speedup" in r and r["batch"] >= smallest
                  and (largest is None or r["batch"] <= largest)]
        if not points:
            continue
        lowest = min(points, key=lambda r: r["speedup"])
        batches = f"batch >= {smallest}" if largest is None else f"batch {smallest}-{largest}"
        out.append({"mode": mode, "batches": batches, "target": target, "points": len(points),
                    "met": sum(r["speedup"] >= target for r in points), "lowest": lowest})
    return out


def target_sentences(rows):
    """Which design targets the run meets (every point's median ratio at or above the target)."""
    out = []
    for t in cpu_targets(rows):
        low = t["lowest"]
        where = f"{low['config']} at batch {low['batch']}: {low['speedup']:.2f}x " \
                f"({low['speedup_paired']['min']:.2f}-{low['speedup_paired']['max']:.2f})"
        head = f"Target engine {t['mode'].upper()} >= {t['target']:.1f}x HF at {t['batches']}"
        if t["met"] == t["points"]:
            out.append(f"{head}: met at all {t['points']} points (lowest {where}).")
        else:
            out.append(f"{head}: missed at {t['points'] - t['met']} of {t['points']} points (lowest {where}).")
    return out


def _split_ratios(row):
    """(engine/HF of the model calls' seconds, engine/HF of the rest's) of a point's time split."""
    e, h = row["split"]["engine"], row["split"]["hf"]
    return e["model"] / h["model"], e["rest"] / h["rest"]


def split_sentences(rows):
    """Where each side's time goes, from the CPU timers (throughput.time_split)."""
    out = []
    for mode in ("ar", "mp"):
        ratios = [_split_ratios(r) for r in rows if r["mode"] == mode and "split" in r]
        if ratios:
            model, rest = [r[0] for r in ratios], [r[1] for r in ratios]
            out.append(f"Engine {mode.upper()}, timed inside the model calls: the engine's model calls take "
                       f"{min(model):.2f}x-{max(model):.2f}x HF's time at the measured points, its own work around "
                       f"them {min(rest):.2f}x-{max(rest):.2f}x HF's.")
    return out


def valid_rate_interval(row):
    """Valid words/s over the interquartile range of the repetitions' times."""
    s = row["seconds"]
    return row["valid_words"] / s["q3"], row["valid_words"] / s["q1"]


def usefulness_sentences(rows):
    """Which mode delivers more valid words per second, per batch, beyond the timing spread."""
    out = []
    ar = {r["batch"]: r for r in rows if r["mode"] == "ar" and "valid_words" in r}
    for batch in sorted(ar):
        mp = [r for r in rows if r["mode"] == "mp" and r["batch"] == batch and "valid_words" in r]
        if not mp:
            continue
        best = max(mp, key=lambda r: r["valid_words_per_s"])
        relation = compare_intervals(valid_rate_interval(ar[batch]), valid_rate_interval(best))
        a, m = ar[batch]["valid_words_per_s"], best["valid_words_per_s"]
        text = {"above": f"AR delivers more valid words per second ({a:.0f}) than the best mask-predict setting "
                         f"({best['config']}, {m:.0f})",
                "below": f"mask-predict {best['config']} delivers more valid words per second ({m:.0f}) than AR ({a:.0f})",
                "overlap": f"AR ({a:.0f}) and the best mask-predict setting ({best['config']}, {m:.0f}) deliver "
                           f"valid words at rates the timing spread does not separate"}[relation]
        out.append(f"At batch {batch}, {text}.")
    return out


def time_to_validity(quality_rows, throughput_rows, levels=(0.5, 0.8, 0.9, 0.95)):
    """Per level and mode: the cheapest configuration whose validity interval lies above the
    level (validity from part 1's 1000 prompts, time per request from part 2's largest batch)."""
    largest = max((r["batch"] for r in throughput_rows), default=None)
    times = {(r["mode"], r["config"]): r["seconds"]["median"] / r["batch"]
             for r in throughput_rows if r["batch"] == largest}
    masked_model = next((r["model"] for r in throughput_rows if r["mode"] == "mp"), None)
    out = []
    for level in levels:
        entry = {"level": level}
        for mode in ("ar", "mp"):
            options = [(times[(mode, q["config"])], q["config"]) for q in quality_rows
                       if (q["kind"] == "ar") == (mode == "ar") and (mode, q["config"]) in times
                       and (mode == "ar" or q["model"] == masked_model) and q["validity"]["lo"] >= level]
            entry[mode] = min(options) if options else None
        out.append(entry)
    return out


# ---- roofline -------------------------------------------------------------------------------

def roofline_sentences(roof, throughput_rows):
    out = []
    points = roof["points"]
    if points:
        fr = [p["fraction_of_bound"] for p in points]
        out.append(f"Measured batches take {1 / max(fr):.0f}x to {1 / min(fr):.0f}x their roofline bound "
                   f"(the bound is {min(fr):.1%}-{max(fr):.1%} of the measured time).")
    fixed = roof["fixed_step_seconds"]
    out.append(f"A fixed cost of {fixed['ar'] * 1e3:.2f} ms per AR step and {fixed['mp'] * 1e3:.2f} ms per mask-predict "
               f"pass, measured at batch 1, predicts the measured times to within "
               f"{_prediction_error(points):.0%} (median over points).")
    for c in roof["crossovers"]:
        out.append(_crossover_sentence(c))
    out += _boundness(roof, throughput_rows)
    return out


def _prediction_error(points):
    errors = sorted(abs(p["predicted_over_measured"] - 1) for p in points)
    return errors[len(errors) // 2] if errors else float("nan")


def _crossover_sentence(c):
    where = lambda b: f"batch {b}" if b else "no batch"  # noqa: E731
    measured = c["measured_tokens"]
    largest = max(c["batches_measured"]) if c["batches_measured"] else None
    measured_text = where(measured) if measured else f"no measured batch up to {largest}"
    agrees = c["predicted_with_fixed_cost"] == measured or (
        measured is None and (c["predicted_with_fixed_cost"] or 10**9) > (largest or 0))
    verdict = "agrees with" if agrees else "differs from"
    return (f"AR's tokens/s reach mask-predict {c['config']}'s at {where(c['predicted_bound'])} by the bound alone, at "
            f"{where(c['predicted_with_fixed_cost'])} with the fixed costs; measured: {measured_text} "
            f"(in valid words/s: {where(c['measured_valid_words']) if c['measured_valid_words'] else 'none measured'}); "
            f"the fixed-cost prediction {verdict} the measurement.")


def _boundness(roof, rows):
    """Memory- or compute-bound, per measured AR batch: the decode step's FLOP per weight byte
    against the ridge (the matmul rate at that batch's rows over the measured bandwidth)."""
    shape = roof["ar_shape"]
    bandwidth = roof["bandwidth_gbps"] * 1e9
    rates = {int(k): v * 1e12 for k, v in roof["matmul_tflops"].items()}
    params = roof["weight_bytes"] / shape["bytes_per_param"]
    verdicts = []
    for r in sorted((r for r in rows if r["mode"] == "ar"), key=lambda r: r["batch"]):
        intensity = 2 * params * r["batch"] / roof["weight_bytes"]
        ridge = rate_at(rates, r["batch"]) / bandwidth
        kind = "memory-bound" if intensity < ridge else "compute-bound"
        verdicts.append(f"batch {r['batch']} {kind} ({intensity:.1f} FLOP/byte against a ridge of {ridge:.1f})")
    return ["By the measured ceilings, AR decode steps are " + ", ".join(verdicts) + "."] if verdicts else []


# ---- rendering ------------------------------------------------------------------------------

def render(results, plots):
    meta = results["meta"]
    load = meta.get("load_average")
    lines = [f"# duodecode benchmark report, {meta['date']}, {meta['machine']}", "",
             f"Device {meta['device']} ({meta['threads']} torch threads), dtype {meta['dtype']}, kernel backend "
             f"{meta['kernel_backend']}, torch {meta['torch']}, transformers {meta['transformers']}"
             + (f"; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) when the run ended"
                if load else "")
             + f". Models: AR `{meta['ar_model']}`, " + ", ".join(f"{k} `{v}`" for k, v in meta["mlm_models"].items())
             + f". {'Quick run (CI sizes).' if meta['quick'] else ''}", ""]
    conclusions = []
    if "quality" in results:
        conclusions += quality_sentences(results["quality"])
    if "throughput" in results:
        conclusions += speed_sentences(results["throughput"]) + split_sentences(results["throughput"])
        if meta["device"] == "cpu":
            conclusions += target_sentences(results["throughput"])
        conclusions += usefulness_sentences(results["throughput"])
    if "roofline" in results:
        conclusions += roofline_sentences(results["roofline"], results.get("throughput", []))
    lines += ["## What the numbers say", ""] + [f"- {c}" for c in conclusions] + [""]
    if "quality" in results:
        lines += quality_section(results["quality"], plots)
    if "throughput" in results:
        lines += throughput_section(results, plots)
    if "roofline" in results:
        lines += roofline_section(results["roofline"], plots)
    if "quality" in results and "throughput" in results and "validity" in (results["quality"]["pooled"] or [{}])[0]:
        lines += ["## 4. Quality against throughput", "", f"![pareto]({plots.get('pareto', '')})", "",
                  "Time to reach a validity level (the cheapest configuration whose 95% interval lies above it; "
                  "seconds per request at the largest measured batch):", "",
                  _table(time_to_validity(results["quality"]["pooled"], results["throughput"]),
                         [("validity >=", lambda r: f"{r['level']:.0%}"),
                          ("AR", lambda r: f"{r['ar'][1]}: {r['ar'][0] * 1e3:.2f} ms" if r["ar"] else "not reached"),
                          ("mask-predict", lambda r: f"{r['mp'][1]}: {r['mp'][0] * 1e3:.2f} ms" if r["mp"] else "not reached")]),
                  ""]
    lines += ["## 5. Profiling", ""]
    if results.get("profile"):
        lines.append("Chrome/Perfetto traces with the engine's named ranges: "
                     + ", ".join(f"`{p}`" for p in results["profile"].values()) + ".")
    else:
        lines.append("Run with `--profile` to write torch.profiler traces of an AR and a mask-predict batch.")
    lines += ["", *speculative_section(results.get("speculative"))]
    return "\n".join(lines) + "\n"


def speculative_section(spec):
    """Part 6 from the speculative benchmark's results in the same folder (its own command:
    it takes longer than the rest of the report together)."""
    lines = ["## 6. Speculative decoding", ""]
    if spec is None:
        return lines + ["Not measured in this folder: `python -m benchmarks.speculative --out <this folder>` "
                        "(`make bench-speculative`) adds it.", ""]
    meta = spec["meta"]
    lines += [f"From `speculative.md` and `speculative.json` in this folder ({meta['date']}): the target "
              f"`{meta['target']}` with the masked draft `{meta['masked_draft']}` and the causal draft "
              f"`{meta['causal_draft']}`, greedy, speed-up over plain decoding by batch size.", "",
              "![speculative](speculative.png)", ""]
    return lines + [f"- {c}" for c in speculative_report.conclusions(spec)] + [""]


def quality_section(q, plots):
    rows = q["pooled"]
    language = rows and "validity" in rows[0]
    lines = ["## 1. Quality as distributions", ""]
    if language:
        lines += [f"![quality]({plots.get('quality', '')})", "", f"![lengths]({plots.get('lengths', '')})", "",
                  f"![frontier]({plots.get('frontier', '')})", "",
                  f"{rows[0]['prompts']} held-out prompts, one seed per request; sampled configurations pooled over "
                  "their seeds. Validity with 95% Wilson intervals; passes include the length head's; NLL: the "
                  "grammar's exact NLL per token of the valid outputs; sampler entropy: the sampler's own NLL "
                  "per token of its samples (seed 0).", ""]
        strata = list(rows[0]["validity_by_length"])
        cols = [("model", "model"), ("config", "config"), ("seeds", "seeds"), ("validity", lambda r: pct(r["validity"])),
                ("passes", "mean_passes"), ("words (ref)", lambda r: f"{r['mean_words']:.1f} ({r['reference_mean_words']:.1f})"),
                ("length TV", "length_tv"), ("NLL/token valid", "nll_per_token_valid"),
                ("sampler entropy", "sampler_nll_per_token")]
        cols += [(f"valid, {s} words", lambda r, s=s: _stratum(r, s)) for s in strata]
        lines += [_table(rows, cols), ""]
        ref = q.get("reference")
        if ref:
            lines += [f"Held-out continuations: {ref['mean_words']:.1f} words on average, exact NLL "
                      f"{ref['entropy_per_token']:.3f} nats/token (an estimate of the reference's entropy given the prompts).", ""]
    else:
        cols = [("model", "model"), ("config", "config"), ("distinct-2", "distinct_2"), ("repeat rate", "repeat_rate"),
                ("passes", "mean_passes"), ("judge ppl", "judge_perplexity")]
        lines += [_table(rows, cols), ""]
    samples = q.get("samples", {})
    if samples and q.get("prompts"):
        lines += [f"Samples (first prompt, `{q['prompts'][0]}`):", ""]
        lines += [f"- {name}: `{texts[0] if texts else ''}`" for name, texts in samples.items()] + [""]
    return lines


def _stratum(row, stratum):
    p = row["validity_by_length"][stratum]
    return f"{p['value']:.0%} (n={p['n']})" if p["n"] else "-"


def throughput_section(results, plots):
    rows = results["throughput"]
    lines = ["## 2. Throughput, engine against HF, and latency", "", f"![throughput]({plots.get('throughput', '')})", "",
             "Seconds: median (interquartile range) over the repetitions after warm-up (reps: how many; a "
             "point repeats until its timed runs add up to a few seconds, so a fast point's median is as "
             "steady as a slow one's); engine/HF: the ratio of "
             "the median times, with the range of the per-repetition paired ratios. AR runs to its natural "
             "length (stops at `<eos>`); mask-predict asks the length head, then runs T passes.", "",
             _table(rows, [("mode", "mode"), ("config", "config"), ("batch", "batch"),
                           ("reps", lambda r: r["seconds"]["n"]), ("engine s", lambda r: _spread(r["seconds"])),
                           ("HF s", lambda r: _spread(r["hf_seconds"]) if "hf_seconds" in r else "-"),
                           ("engine/HF", lambda r: f"{r['speedup']:.2f}x ({r['speedup_paired']['min']:.2f}-"
                                                   f"{r['speedup_paired']['max']:.2f})" if "speedup" in r else "-"),
                           ("same tokens as HF", "same_as_hf"), ("tokens/s", "tokens_per_s"),
                           ("words/s", "words_per_s"),
                           ("valid", lambda r: f"{r['valid_outputs']}/{r['batch']}" if "valid_outputs" in r else "-"),
                           ("valid words/s", "valid_words_per_s")]), ""]
    split = [r for r in rows if "split" in r]
    if split:
        side = lambda who, part: lambda r: r["split"][who][part]  # noqa: E731
        lines += ["Where each side's time goes (CPU): per run, the median seconds inside the model's calls (the "
                  "engine's forward and LM head; HF's model forward, its head included) and of everything else "
                  "(intake, scheduling, sampling or the mask-predict rules, outputs), over a second set of paired "
                  "repetitions (the minimum count of the table above), with timers inside those calls.", "",
                  _table(split, [("mode", "mode"), ("config", "config"), ("batch", "batch"),
                                 ("engine model s", side("engine", "model")), ("engine rest s", side("engine", "rest")),
                                 ("HF model s", side("hf", "model")), ("HF rest s", side("hf", "rest")),
                                 ("model engine/HF", lambda r: f"{_split_ratios(r)[0]:.2f}x"),
                                 ("rest engine/HF", lambda r: f"{_split_ratios(r)[1]:.2f}x")]), ""]
    lat = results.get("latency", [])
    if lat:
        lines += ["Latency under Poisson arrivals, both modes at the same rates (seconds; rate in requests/s, as a "
                  "fraction of AR's measured capacity):", "",
                  _table(lat, [("mode", "mode"), ("config", "config"), ("load", "load"), ("rate", "rate"),
                               ("requests", "requests"), ("TTFT p50", lambda r: r["ttft"]["p50"]),
                               ("TTFT p99", lambda r: r["ttft"]["p99"]), ("e2e p50", lambda r: r["e2e"]["p50"]),
                               ("e2e p90", lambda r: r["e2e"]["p90"]), ("e2e p99", lambda r: r["e2e"]["p99"])]), ""]
    return lines


def roofline_section(roof, plots):
    rates = ", ".join(f"{k} rows {v:.3g}" for k, v in roof["matmul_tflops"].items())
    lines = ["## 3. The roofline", "", f"![roofline]({plots.get('roofline', '')})", "",
             f"Ceilings measured in this run at the workload's sizes: copying a buffer the size of the weights "
             f"({roof['weight_bytes'] / 1e6:.2f} MB) {roof['bandwidth_gbps']:.1f} GB/s; {roof['dtype']} matmul of the "
             f"MLP's shape ({roof['matmul_shape'][0]} x {roof['matmul_shape'][1]}) in TFLOP/s at: {rates}.", "",
             _table(roof["points"], [("mode", "mode"), ("config", "config"), ("batch", "batch"),
                                     ("measured s", "measured_seconds"), ("bound s", "bound_seconds"),
                                     ("bound / measured", lambda r: f"{r['fraction_of_bound']:.1%}"),
                                     ("predicted s (bound + fixed cost)", "predicted_seconds"),
                                     ("predicted / measured", "predicted_over_measured")]), ""]
    return lines
