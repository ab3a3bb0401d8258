"""PNG plots of a results dict (the parts' modules describe it), one function per figure."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _pooled(results):
    return results["quality"]["pooled"]


def _label(ax, xlabel, ylabel, title, legend=7):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend)


def _err(p):
    return [[p["value"] - p["lo"]], [p["hi"] - p["value"]]]


def quality_vs_passes(results, path):
    """Validity (95% Wilson intervals) against passes, per masked model; AR as bands."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rows = _pooled(results)
    for i, model in enumerate(dict.fromkeys(r["model"] for r in rows if r["kind"] != "ar")):
        pts = sorted((r["mean_passes"], r) for r in rows if r["model"] == model and r["kind"] == "mp"
                     and not r["config"].endswith("oracle frame"))
        for x, r in pts:
            ax.errorbar([x], [r["validity"]["value"]], yerr=_err(r["validity"]), fmt="o", color=f"C{i}", capsize=3)
        ax.plot([x for x, _ in pts], [r["validity"]["value"] for _, r in pts], color=f"C{i}", label=f"{model} mask-predict")
        for r in rows:
            if r["model"] == model and r["kind"] == "l2r" and r["temperature"] in (0.0, 1.0):
                ax.errorbar([r["mean_passes"]], [r["validity"]["value"]], yerr=_err(r["validity"]), fmt="s",
                            color=f"C{i}", mfc="white", capsize=3)
    for r in rows:
        if r["kind"] == "ar" and r["temperature"] in (0.0, 1.0):
            ax.axhspan(r["validity"]["lo"], r["validity"]["hi"], color="gray" if r["temperature"] else "black",
                       alpha=0.25, label=f"AR {r['config']}")
    ax.set_xscale("log", base=2)
    _label(ax, "passes per request (length head included; open squares: one slot per pass, left to right)",
           "validity", "Quality against passes")
    return _save(fig, path)


def lengths(results, path):
    """Output-length histograms against the held-out continuations', and validity by length."""
    q = results["quality"]
    rows = [r for r in _pooled(results) if r["config"] in ("AR sampled, temp 1", "AR greedy", "T=N", "L2R sampled, temp 1")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ref = q["reference"]["length_histogram"]
    axes[0].step(range(len(ref)), ref, where="mid", color="black", linewidth=2, label="held-out continuations")
    for i, r in enumerate(rows):
        axes[0].step(range(len(r["length_histogram"])), r["length_histogram"], where="mid", color=f"C{i}",
                     label=f"{r['model']} {r['config']} (TV {r['length_tv']:.2f})")
        strata = list(r["validity_by_length"])
        values = [r["validity_by_length"][s]["value"] or 0 for s in strata]
        axes[1].bar([j + 0.8 * i / len(rows) for j in range(len(strata))], values, width=0.8 / len(rows),
                    color=f"C{i}", label=f"{r['model']} {r['config']}")
        axes[1].set_xticks(range(len(strata)), strata)
    axes[0].set_xlabel("words in the continuation")
    axes[0].set_ylabel("share of outputs")
    axes[1].set_xlabel("words in the output")
    axes[1].set_ylabel("validity")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle("Lengths: distributions, and validity by output length")
    return _save(fig, path)


def frontier(results, path):
    """Exact NLL per token (valid outputs) against the sampler's entropy, across temperatures."""
    q = results["quality"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    by_model = {}
    for r in q["rows"]:
        if r.get("sampler_nll_per_token") is not None and r.get("nll_per_token_valid") is not None:
            by_model.setdefault(f"{r['model']} ({r['kind']})", []).append(r)
    for i, (name, pts) in enumerate(sorted(by_model.items())):
        pts.sort(key=lambda r: r["temperature"])
        ax.plot([r["sampler_nll_per_token"] for r in pts], [r["nll_per_token_valid"] for r in pts], marker="o",
                color=f"C{i}", label=name)
        for r in pts:
            ax.annotate(f"T={r['temperature']:g}, {r['validity']['value']:.0%} valid",
                        (r["sampler_nll_per_token"], r["nll_per_token_valid"]), fontsize=6)
    h = q["reference"]["entropy_per_token"]
    ax.plot([h], [h], marker="*", markersize=12, color="black", linestyle="none", label="the language itself")
    _label(ax, "sampler entropy (nats/token)", "grammar NLL of valid outputs (nats/token)",
           "Quality-entropy frontier across temperatures")
    return _save(fig, path)


def throughput_vs_batch(results, path):
    """Valid words/s against batch (interquartile range of the repetitions); HF's tokens/s dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    series = {}
    for r in results["throughput"]:
        series.setdefault(r["config"], []).append(r)
    for i, (config, pts) in enumerate(sorted(series.items(), key=lambda kv: (kv[0] != "AR greedy", kv[0]))):
        pts.sort(key=lambda r: r["batch"])
        b = [r["batch"] for r in pts]
        if all("valid_words_per_s" in r for r in pts):
            lo = [r["valid_words"] / r["seconds"]["q3"] for r in pts]
            hi = [r["valid_words"] / r["seconds"]["q1"] for r in pts]
            axes[0].plot(b, [r["valid_words_per_s"] for r in pts], marker="o", color=f"C{i}", label=config)
            axes[0].fill_between(b, lo, hi, color=f"C{i}", alpha=0.2)
        axes[1].plot(b, [r["tokens_per_s"] for r in pts], marker="o", color=f"C{i}", label=f"{config} engine")
        if all("hf_tokens_per_s" in r for r in pts):
            axes[1].plot(b, [r["hf_tokens_per_s"] for r in pts], marker="x", linestyle="--", color=f"C{i}",
                         label=f"{config} HF")
    for ax, label in ((axes[0], "valid words / s"), (axes[1], "generated tokens / s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle("What each mode delivers per second")
    return _save(fig, path)


def roofline_plot(results, path):
    """Bound and bound-plus-fixed-cost predictions (lines) against measured tokens/s (dots)."""
    roof = results["roofline"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, c in enumerate(roof["crossovers"]):
        b = [p["batch"] for p in c["curve"]]
        if i == 0:
            ax.plot(b, [p["ar_bound"] for p in c["curve"]], color="C0", linestyle=":", label="AR bound")
            ax.plot(b, [p["ar_model"] for p in c["curve"]], color="C0", label="AR bound + fixed cost")
        ax.plot(b, [p["mp_bound"] for p in c["curve"]], color=f"C{i + 1}", linestyle=":", label=f"{c['config']} bound")
        ax.plot(b, [p["mp_model"] for p in c["curve"]], color=f"C{i + 1}", label=f"{c['config']} bound + fixed cost")
    configs = [c["config"] for c in roof["crossovers"]]
    for r in results.get("throughput", []):
        color = "C0" if r["mode"] == "ar" else f"C{configs.index(r['config']) + 1}" if r["config"] in configs else "gray"
        ax.scatter([r["batch"]], [r["tokens_per_s"]], color=color, s=20, zorder=3)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _label(ax, "batch size", "generated tokens / s", "Roofline (lines) and measured engine (dots)", legend=6)
    return _save(fig, path)


def pareto(results, path):
    """Validity against seconds per 1000 requests of part 1's runs (single runs at full batch)."""
    rows = _pooled(results)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        pts = [r for r in rows if r["model"] == model]
        ax.errorbar([1000 * r["seconds"] / r["prompts"] for r in pts], [r["validity"]["value"] for r in pts],
                    yerr=[[r["validity"]["value"] - r["validity"]["lo"] for r in pts],
                          [r["validity"]["hi"] - r["validity"]["value"] for r in pts]],
                    fmt="o", color=f"C{i}", capsize=2, label=model)
    ax.set_xscale("log")
    _label(ax, "seconds per 1000 prompts (part 1's runs, all prompts in one engine batch)", "validity",
           "Quality against cost", legend=8)
    return _save(fig, path)


def all_plots(results, out_dir):
    language = "quality" in results and results["quality"]["pooled"] and "validity" in results["quality"]["pooled"][0]
    plots = {}
    if language:
        plots.update(quality=quality_vs_passes, lengths=lengths, frontier=frontier, pareto=pareto)
    if "throughput" in results:
        plots["throughput"] = throughput_vs_batch
    if "roofline" in results:
        plots["roofline"] = roofline_plot
    return {name: fn(results, out_dir / f"{name}.png") for name, fn in plots.items()}
