"""PNG plots of a results dict (see suite.py), one function per figure."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _tokens_per_s_vs_batch(ax, title):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("generated tokens / s")
    ax.set_title(title)
    ax.legend(fontsize=7)


def quality_vs_passes(results, path):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rows = results["quality"]
    key = "validity" if "validity" in rows[0] else "distinct_2"
    series = {}
    for r in rows:
        if r["mode"] == "mp" and r.get("threshold") is None and r.get("block_length") is None:
            label = r["config"].split(" T=")[0] + f" {r['remask']}"
            series.setdefault(label, []).append((r["iterations"], r[key]))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    for r in rows:
        if r["mode"] == "ar":
            ax.axhline(r[key], linestyle="--", color="black" if "greedy" in r["config"] else "gray",
                       label=f"AR {r['config']}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("mask-predict passes T")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title("Quality against passes")
    ax.legend(fontsize=7)
    return _save(fig, path)


def throughput_vs_batch(results, path):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series = {}
    for r in results["throughput"]:
        key = (0, "AR") if r["mode"] == "ar" else (r["iterations"], f"MP T={r['iterations']}")
        series.setdefault(key, []).append((r["batch"], r["tokens_per_s"], r.get("hf_tokens_per_s")))
    for i, ((_, label), pts) in enumerate(sorted(series.items())):  # AR first, then T ascending
        pts.sort()
        color = f"C{i}"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=f"{label} engine")
        if all(p[2] for p in pts):
            ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="x", linestyle="--", color=color,
                    label=f"{label} HF")
    _tokens_per_s_vs_batch(ax, "Throughput against batch size")
    return _save(fig, path)


def roofline_plot(results, path):
    roof = results["roofline"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pred = roof["predicted"]
    batches = [p["batch"] for p in pred]
    ax.plot(batches, [p["ar_tokens_per_s"] for p in pred], color="C0", label="AR roofline")
    for i, t in enumerate(roof["iterations"]):
        ax.plot(batches, [p[f"mp_T{t}_tokens_per_s"] for p in pred], color=f"C{i + 1}", label=f"MP T={t} roofline")
    for r in results.get("throughput", []):
        color = "C0" if r["mode"] == "ar" else f"C{roof['iterations'].index(r['iterations']) + 1}" \
            if r["iterations"] in roof["iterations"] else "gray"
        ax.scatter([r["batch"]], [r["tokens_per_s"]], color=color, marker="o", s=18)
    _tokens_per_s_vs_batch(ax, "Roofline bound (lines) and measured engine (dots)")
    return _save(fig, path)


def pareto(results, path):
    rows = results["quality"]
    key = "validity" if "validity" in rows[0] else "distinct_2"
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mode, marker, color in (("ar", "s", "C0"), ("mp", "o", "C1")):
        pts = [(r["words_per_s"], r[key], r["config"]) for r in rows if r["mode"] == mode]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color,
                   label="autoregressive" if mode == "ar" else "mask-predict")
    ax.set_xscale("log")
    ax.set_xlabel(f"words of text / s (batch {rows[0]['prompts']}; padding slots not counted)")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title("Quality against throughput")
    ax.legend(fontsize=8)
    return _save(fig, path)


def all_plots(results, out_dir):
    plots = {"quality": quality_vs_passes, "throughput": throughput_vs_batch, "roofline": roofline_plot,
             "pareto": pareto}
    needs = {"quality": "quality", "throughput": "throughput", "roofline": "roofline", "pareto": "quality"}
    return {name: fn(results, out_dir / f"{name}.png") for name, fn in plots.items() if needs[name] in results}
