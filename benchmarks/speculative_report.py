"""speculative.md and speculative.png from the results of benchmarks/speculative.py.

Every sentence is computed from the run's numbers: which configuration is fastest at the
smallest and the largest batch, where speculation stops paying, how the two drafts compare
in accepted length and cost, and what the roofline says about why the gain shrinks.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402


def _by(rows, key):
    out = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out


def _fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def _table(header, lines):
    text = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    text += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return "\n".join(text)


def _speculative_rows(results):
    return [r for r in results["rows"] if r["config"] != "plain"]


def conclusions(results) -> list[str]:
    rows = _speculative_rows(results)
    batches = sorted({r["batch"] for r in rows})
    by_batch = _by(rows, "batch")
    best = {b: max(by_batch[b], key=lambda r: r["speedup"]) for b in batches}
    small, large = batches[0], batches[-1]
    lines = ["Fastest configuration by batch size (median speed-up over plain decoding): " + "; ".join(
        f"batch {b}: {best[b]['config']} {best[b]['speedup']:.2f}x" for b in batches) + "."]
    # a win is claimed only where some configuration is faster in every timed round
    paying = {b: [r for r in by_batch[b] if r["speedup_range"][0] > 1] for b in batches}
    winners = [b for b in batches if paying[b]]
    if winners:
        lines.append("Faster than plain decoding in every timed round: " + "; ".join(
            f"batch {b}: {', '.join(r['config'] for r in paying[b])}" for b in winners)
            + (f"; at batch {', '.join(str(b) for b in batches if b not in winners)} no configuration is."
               if len(winners) < len(batches) else "."))
    else:
        lines.append("No configuration is faster than plain decoding in every timed round at any batch size: "
                     "the medians above lie within the rounds' spread or below 1.")
    for kind in ("masked", "causal"):
        fixed = [r for r in by_batch[small] if r["config"].startswith(kind) and "adaptive" not in r["config"]]
        if fixed:
            top = max(fixed, key=lambda r: r["mean_accepted_length"] or 0)
            lines.append(f"The {kind} draft accepts at most {_fmt(top['mean_accepted_length'])} tokens per verify "
                         f"step at batch {small} ({top['config']}); its first slot is accepted "
                         f"{100 * top['acceptance_per_position'][0]:.0f}% of the time.")
    adaptive = [r for r in rows if "adaptive" in r["config"] and r["batch"] == large]
    if adaptive:
        parts = ", ".join(f"{r['config']} {r['speedup']:.2f}x" for r in adaptive)
        lines.append(f"With the adaptive choice of k at batch {large}: {parts} (1.00x would mean it learned to "
                     "stop drafting at no cost).")
    if not all(r["identical_to_plain"] for r in results["rows"]):
        lines.append("WARNING: some greedy outputs differed from plain decoding.")
    else:
        lines.append("Every configuration produced exactly the plain greedy tokens.")
    lines += roofline_sentences(results)
    return lines


def roofline_sentences(results) -> list[str]:
    account = results["roofline"]
    bounds = account["bounds"]
    if not bounds:
        return []
    batches = sorted({b["batch"] for b in bounds})
    kmax = max(results["configs"][b["config"]]["num_speculative_tokens"] for b in bounds)
    label = next((b["config"] for b in bounds if b["config"] == f"causal k={kmax}"), bounds[0]["config"])
    at = {b["batch"]: b for b in bounds if b["config"] == label}
    lo, hi = at[batches[0]], at[batches[-1]]
    ridge = account["ridge_rows"]
    lines = [f"Roofline: the target's forward turns compute-bound at about {ridge} tokens on this machine, and a "
             f"verify forward puts k + 1 rows per sequence through it, so from batch ~{max(1, ridge // (kmax + 1))} "
             f"on (k = {kmax}) every draft row costs as much as a plain token. For {label} a step costs "
             f"{lo['step_cost_roofline']:.2f}x a plain step at batch {batches[0]} and {hi['step_cost_roofline']:.2f}x "
             f"at batch {batches[-1]} (verify forward and draft), which with the measured accepted length allows "
             f"{lo['speedup_roofline']:.2f}x and {hi['speedup_roofline']:.2f}x."]
    lines.append(f"Measured, a plain step at batch {batches[0]} takes {lo['plain_step_over_roofline']:.0f}x its roofline "
                 f"time (at batch {batches[-1]}: {hi['plain_step_over_roofline']:.0f}x): on models this small the "
                 "fixed host work of a step (scheduling, launches, the sampler, drafting bookkeeping) dominates, so "
                 f"a step of {label} costs {lo['step_cost_measured']:.2f}x a plain one at batch {batches[0]} and "
                 f"{hi['step_cost_measured']:.2f}x at batch {batches[-1]}, and the speed-up is about the accepted "
                 "length over that ratio. The gain still shrinks with batch for the roofline's reason, once the "
                 "rows' own cost outgrows the fixed one; on a GPU with real model sizes the weights' bytes play "
                 "the fixed cost's part.")
    return lines


def write(results, out):
    rows = results["rows"]
    meta = results["meta"]
    batches = sorted({r["batch"] for r in rows})
    by_config = _by(rows, "config")
    plain = {r["batch"]: r for r in by_config["plain"]}
    speed = [[label] + [f"{r['speedup']:.2f} ({r['speedup_range'][0]:.2f}-{r['speedup_range'][1]:.2f})"
                        for r in sorted(rs, key=lambda r: r["batch"])]
             for label, rs in by_config.items() if label != "plain"]
    plain_line = ["plain tokens/s"] + [f"{plain[b]['tokens_per_s']:.0f}" for b in batches]
    accepted = [[label] + [_fmt(r["mean_accepted_length"]) for r in sorted(rs, key=lambda r: r["batch"])]
                for label, rs in by_config.items() if label != "plain"]
    kmax = max(c["num_speculative_tokens"] for c in results["configs"].values() if c)
    slots = [[f"{label} (batch {r['batch']})"] + [f"{100 * a:.0f}%" for a in r["acceptance_per_position"]]
             for label, rs in by_config.items() if label != "plain" and f"k={kmax} " in label + " "
             for r in rs if r["batch"] == batches[0]]
    bounds = results["roofline"]["bounds"]
    bound_rows = [[label] + [f"{b['step_cost_measured']:.2f} / {b['step_cost_roofline']:.2f} / {b['speedup_roofline']:.2f}"
                             for b in sorted(bs, key=lambda b: b["batch"])]
                  for label, bs in _by(bounds, "config").items()]
    step_line = ["plain ms per step"] + [f"{plain[b]['ms_per_step']:.2f}" for b in batches]
    text = [
        "## Speculative decoding: a draft proposes, the causal LM verifies",
        "",
        f"`{meta['command']}` on {meta['machine']} ({meta['device']}, torch {meta['torch']}, {meta['threads']} "
        f"thread(s)), {meta['date']}. Target `{meta['target']}`; masked draft `{meta['masked_draft']}`; causal "
        f"draft `{meta['causal_draft']}`. Greedy, up to {meta['new_tokens']} new tokens per held-out prompt "
        f"(stopping at <eos>), every configuration timed round-robin {meta['reps']} times; speed-up = plain "
        "median time / configuration median time (range of the per-round ratios).",
        "",
        *[f"- {line}" for line in conclusions(results)],
        "",
        "![speculative decoding](speculative.png)",
        "",
        "Speed-up over plain autoregressive decoding, by batch size:",
        "",
        _table(["configuration"] + [f"batch {b}" for b in batches], [plain_line] + speed),
        "",
        "Mean accepted length (tokens per verify step: accepted drafts + the target's own token):",
        "",
        _table(["configuration"] + [f"batch {b}" for b in batches], accepted),
        "",
        f"Acceptance per slot position at batch {batches[0]} (share of drafted slots accepted):",
        "",
        _table(["configuration"] + [f"slot {j}" for j in range(kmax)], slots),
        "",
        "Cost of a speculative step over a plain step, measured / roofline (the run's ceilings, the models' "
        f"shapes, context {results['roofline']['context']}), and the speed-up the roofline allows with the "
        "measured accepted length:",
        "",
        _table(["configuration"] + [f"batch {b}" for b in batches], [step_line] + bound_rows),
        "",
    ]
    (out / "speculative.md").write_text("\n".join(text))
    plot(results, out / "speculative.png")


def plot(results, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    configs = [c for c in results["configs"] if c != "plain"]
    for i, label in enumerate(configs):
        style = dict(color=colors[i % len(colors)], marker="o" if label.startswith("causal") else "s",
                     linestyle=":" if "adaptive" in label else "-")
        measured = sorted((r["batch"], r["speedup"]) for r in results["rows"] if r["config"] == label)
        axes[0].plot(*zip(*measured), label=label, **style)
        bound = sorted((b["batch"], b["speedup_roofline"]) for b in results["roofline"]["bounds"] if b["config"] == label)
        if bound:
            axes[1].plot(*zip(*bound), label=label, **style)
    for ax, title in zip(axes, ("measured speed-up over plain AR", "roofline speed-up (measured accepted length)")):
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("batch size")
        ax.set_title(title)
    axes[0].set_ylabel("speed-up (x)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
