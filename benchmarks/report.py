"""report.md from a results dict: tables, plots, and conclusions computed from the numbers.

Every sentence under "What the numbers say" is generated from the measured values of this
run; none is pre-written.
"""


def _fmt(x, digits=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _table(rows, columns):
    head = "| " + " | ".join(title for title, _ in columns) + " |"
    lines = [head, "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(key)) for _, key in columns) + " |")
    return "\n".join(lines)


def quality_conclusions(rows):
    key = "validity" if "validity" in rows[0] else None
    if key is None:
        return []
    ar = {r["config"]: r for r in rows if r["mode"] == "ar"}
    mp = [r for r in rows if r["mode"] == "mp"]
    greedy = ar.get("greedy")
    best = max(mp, key=lambda r: (r[key], -r["mean_nfe"]))
    out = [f"AR greedy decoding produces valid sentences {greedy[key]:.0%} of the time; the best mask-predict "
           f"configuration ({best['config']}) reaches {best[key]:.0%} with {best['mean_nfe']:.1f} passes on average."]
    for label in sorted({r["config"].split(" ")[0] for r in mp}):
        runs = sorted((r for r in mp if r["config"].startswith(label + " ") and r["remask"] == "low_confidence"
                       and r.get("threshold") is None and r.get("block_length") is None), key=lambda r: r["iterations"])
        if len(runs) >= 2:
            first, last = runs[0], runs[-1]
            trend = ("rises" if last[key] > first[key] else "falls" if last[key] < first[key] else "stays")
            out.append(f"On {label}, validity {trend} from {first[key]:.0%} at T={first['iterations']} to "
                       f"{last[key]:.0%} at T={last['iterations']} passes (low-confidence re-masking)."
                       if trend != "stays" else
                       f"On {label}, validity stays at {first[key]:.0%} from T={first['iterations']} to "
                       f"T={last['iterations']} passes (low-confidence re-masking).")
        enough = [r for r in runs if greedy and r[key] >= 0.9 * greedy[key]]
        if greedy and runs:
            out.append(f"On {label}, " + (f"T={enough[0]['iterations']} passes are needed to reach 90% of AR's validity."
                                          if enough else "no T reaches 90% of AR's validity."))
    useful = [r for r in mp if r[key] > 0]
    if greedy and useful:
        fastest = max(useful, key=lambda r: r["words_per_s"])
        out.append(f"At batch {greedy['prompts']}, AR greedy writes {greedy['words_per_s']:.0f} words of text/s; the fastest "
                   f"mask-predict setting with any valid output ({fastest['config']}) writes {fastest['words_per_s']:.0f} "
                   f"at {fastest[key]:.0%} validity, and the most valid ({best['config']}) {best['words_per_s']:.0f}.")
    thr = [r for r in mp if r.get("threshold") is not None]
    for r in thr:
        out.append(f"{r['config']} ({r['model'].rstrip('/').split('/')[-1]}) runs {r['mean_nfe']:.1f} passes on average for "
                   f"{r['generated_tokens'] / r['prompts']:.0f} slots, at {r[key]:.0%} validity.")
    return out


def throughput_conclusions(rows, roof):
    out = []
    ar = {r["batch"]: r for r in rows if r["mode"] == "ar"}
    mp = [r for r in rows if r["mode"] == "mp"]
    ratios = [r["speedup"] for r in rows if r.get("speedup")]
    if ratios:
        low = min(rows, key=lambda r: r.get("speedup") or float("inf"))
        out.append(f"Against HF transformers on the same model and batch, the engine is {min(ratios):.2f}x to "
                   f"{max(ratios):.2f}x as fast (slowest: {low['mode'].upper()} at batch {low['batch']}).")
    ar_four = [r for b, r in ar.items() if b >= 4 and r.get("speedup")]
    if ar_four:
        beaten = all(r["speedup"] > 1 for r in ar_four)
        out.append(f"AR at batch >= 4 {'beats' if beaten else 'does not always beat'} HF generate(): "
                   + ", ".join(f"{r['speedup']:.2f}x at {r['batch']}" for r in sorted(ar_four, key=lambda r: r["batch"])) + ".")
    for t in sorted({r["iterations"] for r in mp}):
        pts = {r["batch"]: r for r in mp if r["iterations"] == t}
        common = sorted(set(pts) & set(ar))
        if not common:
            continue
        first = common[0]
        ratio = pts[first]["tokens_per_s"] / ar[first]["tokens_per_s"]
        overtake = next((b for b in common if ar[b]["tokens_per_s"] >= pts[b]["tokens_per_s"]), None)
        predicted = roof["crossover_batch"].get(str(t)) if roof else None
        out.append(
            f"Mask-predict with T={t} generates {ratio:.2f}x AR's tokens/s at batch {first}; "
            + (f"AR overtakes it from batch {overtake} in this run" if overtake else
               f"AR does not overtake it up to batch {common[-1]} in this run")
            + (f" (the roofline predicts batch {predicted})." if predicted else " (the roofline predicts no crossover up to batch 4096).")
        )
    return out


def roofline_conclusions(roof):
    c, pt = roof["ceilings"], roof["per_token"]
    ar_intensity = pt["ar_decode_flops"] / pt["ar_decode_bytes_batch1"]
    ridge = c["matmul_tflops"] * 1e12 / (max(c["copy_gbps"], c["read_gbps"]) * 1e9)
    return [
        f"This machine's ridge point is {ridge:.0f} FLOP/byte (matmul {c['matmul_tflops']:.2f} TFLOP/s over "
        f"{max(c['copy_gbps'], c['read_gbps']):.0f} GB/s, both measured in this run).",
        f"An AR decode step at batch 1 does {ar_intensity:.2f} FLOP per byte moved: deeply memory-bound, so batching "
        f"B sequences multiplies its tokens/s almost by B until B is near {max(1, ridge / max(ar_intensity, 1e-9)):.0f}.",
        f"A mask-predict pass costs {pt['mp_pass_flops_per_token'] / pt['ar_decode_flops']:.2f}x an AR decode step's "
        f"FLOPs per target slot, paid once per pass: with T passes over N slots the work per token is about "
        f"T x (prompt + N) / N AR steps, so once both are compute-bound AR wins; at small batch mask-predict wins "
        f"whenever T < N, because it reads the weights T times for N tokens instead of N times.",
    ]


def render(results, plots):
    meta = results["meta"]
    lines = [f"# duodecode benchmark report, {meta['date']}, {meta['machine']}", "",
             f"Device {meta['device']} ({meta['threads']} torch threads), dtype {meta['dtype']}, kernel backend {meta['kernel_backend']}, "
             f"torch {meta['torch']}, transformers {meta['transformers']}. Models: AR `{meta['ar_model']}`, "
             + ", ".join(f"{k} `{v}`" for k, v in meta["mlm_models"].items())
             + f". {'Quick run (CI sizes).' if meta['quick'] else ''}", ""]
    conclusions = []
    if "quality" in results:
        conclusions += quality_conclusions(results["quality"])
    if "throughput" in results:
        conclusions += throughput_conclusions(results["throughput"], results.get("roofline"))
    if "roofline" in results:
        conclusions += roofline_conclusions(results["roofline"])
    lines += ["## What the numbers say", ""] + [f"- {c}" for c in conclusions] + [""]
    if "quality" in results:
        cols = [("mode", "mode"), ("config", "config"), ("validity", "validity"),
                ("mean log p (valid)", "mean_log_prob_valid"), ("distinct-1", "distinct_1"),
                ("distinct-2", "distinct_2"), ("repeat rate", "repeat_rate"), ("mean NFE / tokens", "mean_nfe"),
                ("tokens/s", "tokens_per_s"), ("words/s", "words_per_s")]
        if any("judge_perplexity" in r for r in results["quality"]):
            cols.append(("judge ppl", "judge_perplexity"))
        lines += ["## 1. Quality against passes", "", f"![quality]({plots.get('quality', '')})", "",
                  _table(results["quality"], cols), ""]
        samples = results.get("samples", {})
        if samples:
            lines += ["Samples (first prompt):", ""]
            for name, texts in samples["texts"].items():
                lines.append(f"- {name}: `{samples['prompts'][0]}` -> `{texts[0] if texts else ''}`")
            lines.append("")
    if "throughput" in results:
        lines += ["## 2. Throughput and latency against batch size", "",
                  f"![throughput]({plots.get('throughput', '')})", "",
                  _table(results["throughput"], [("mode", "mode"), ("batch", "batch"), ("T", "iterations"),
                                                 ("tokens", "generated_tokens"), ("engine tok/s", "tokens_per_s"),
                                                 ("HF tokens", "hf_generated_tokens"), ("HF tok/s", "hf_tokens_per_s"),
                                                 ("engine / HF", "speedup")]), ""]
        lat = [dict(mode=r["mode"], config=r["config"], rate=r["rate"], requests=r["requests"],
                    tps=r["tokens_per_s"], **{f"{m}_{p}": r[m][p] for m in ("ttft", "tpot", "e2e") for p in ("p50", "p90", "p99")})
               for r in results.get("latency", [])]
        if lat:
            lines += ["Latency under Poisson arrivals (seconds; rate in requests/s):", "",
                      _table(lat, [("mode", "mode"), ("config", "config"), ("rate", "rate"), ("requests", "requests"),
                                   ("tok/s", "tps"), ("TTFT p50", "ttft_p50"), ("TTFT p99", "ttft_p99"),
                                   ("TPOT p50", "tpot_p50"), ("TPOT p99", "tpot_p99"), ("e2e p50", "e2e_p50"),
                                   ("e2e p99", "e2e_p99")]), ""]
    if "roofline" in results:
        roof = results["roofline"]
        c, pt = roof["ceilings"], roof["per_token"]
        lines += ["## 3. The roofline", "", f"![roofline]({plots.get('roofline', '')})", "",
                  f"Ceilings measured in this run: copy {c['copy_gbps']:.1f} GB/s (read + write), read "
                  f"{c['read_gbps']:.1f} GB/s, {c['matmul_dtype']} matmul ({c['matmul_n']}^3) "
                  f"{c['matmul_tflops']:.3g} TFLOP/s.", "",
                  "| work | FLOPs | bytes at batch 1 |", "|---|---|---|",
                  f"| AR decode step, per sequence | {pt['ar_decode_flops']:.3g} | {pt['ar_decode_bytes_batch1']:.3g} |",
                  f"| mask-predict pass, per target slot | {pt['mp_pass_flops_per_token']:.3g} | "
                  f"{pt['mp_pass_bytes_batch1']:.3g} (whole pass) |", "",
                  "Batch at which AR's roofline tokens/s reaches mask-predict's, by T: "
                  + ", ".join(f"T={t}: {b if b else 'none up to 4096'}" for t, b in roof["crossover_batch"].items())
                  + ".", ""]
    if "quality" in results:
        lines += ["## 4. Quality against throughput", "", f"![pareto]({plots.get('pareto', '')})", ""]
    lines += ["## 5. Profiling", ""]
    if results.get("profile"):
        lines.append("Chrome/Perfetto traces with the engine's named ranges (AR: schedule, prepare_inputs, forward, "
                     "sample; mask-predict: schedule, forward, predict, remask): "
                     + ", ".join(f"`{p}`" for p in results["profile"].values()) + ".")
    else:
        lines.append("Run with `--profile` to write torch.profiler traces of an AR and a mask-predict batch.")
    return "\n".join(lines) + "\n"
