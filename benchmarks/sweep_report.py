"""The sweep's table and plots (benchmarks/results/sweep/README.md and *.png) from its point JSONs.

Every number comes from a committed point file; sentences about causes compare two points that
differ in one factor only (attention structure, objective, model size, data, budget) and are
written only for pairs that both exist.
"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks import stats, sweep_plan  # noqa: E402
from benchmarks.objectives import MODELS  # noqa: E402

QUALITY_COLUMNS = ("T=1", "T=4", "T=N", "L2R greedy", "L2R sampled")
AR_COLUMNS = {"L2R greedy": "AR greedy", "L2R sampled": "AR sampled"}


def load_points(results):
    return [json.loads(p.read_text()) for p in sorted((Path(results) / "points").glob("*.json"))]


def _validity(row):
    return stats.proportion_text(row["validity"])


def quality_cell(point, column):
    quality = point["quality"]
    row = quality.get(column) or quality.get(AR_COLUMNS.get(column, ""))
    return _validity(row) if row else "-"


def headline(point):
    """The quality measure every model has: validity of sampling in its left-to-right order."""
    q = point["quality"]
    return (q.get("L2R sampled") or q["AR sampled"])["validity"]


def _gap(point, key="nll"):
    entry = point["likelihood"].get(key)
    return f"{entry['gap']:.3f}" if entry else "-"


def still_falling(point):
    """How much the held-out objective loss fell over the last quarter of training (nats/token):
    near zero when the budget is near convergence for this model."""
    evals = point["train"]["eval"]
    steps = evals[-1][0]
    before = min(evals, key=lambda e: abs(e[0] - 0.75 * steps))
    return before[1] - evals[-1][1]


def table(points):
    head = ("| model | size | steps | data | lr | params | train tokens | train FLOPs | last-quarter drop | NLL (floor) | gap | "
            "random-order gap | single-mask gap | length-head gap | "
            + " | ".join(f"valid {c}" for c in QUALITY_COLUMNS) + " | mean words (ref) | length TV |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    order = {name: i for i, name in enumerate(MODELS)}
    for p in sorted(points, key=lambda p: (p["point"]["size"], p["point"]["data"], order[p["point"]["model"]],
                                           p["point"]["steps"], p["point"]["lr"])):
        pt, tr, nll = p["point"], p["train"], p["likelihood"]["nll"]
        ref = p["quality"].get("L2R sampled") or p["quality"]["AR sampled"]
        sampled = p["quality"].get("L2R sampled") or p["quality"]["AR sampled"]
        lines.append(
            f"| {pt['model']} | {pt['size']} | {pt['steps']} | {pt['data']} | {pt['lr']:g} | {tr['params']:,} | "
            f"{tr['tokens'] / 1e6:.2f}M | {tr['flops']:.2e} | {still_falling(p):.3f} | {nll['model']:.3f} ({nll['floor']:.3f}) | "
            f"{nll['gap']:.3f} | {_gap(p, 'random_order_nll')} | {_gap(p, 'single_mask')} | {_gap(p, 'length_head')} | "
            + " | ".join(quality_cell(p, c) for c in QUALITY_COLUMNS)
            + f" | {sampled['mean_words']:.1f} ({ref['reference_mean_words']:.1f}) | {sampled['length_tv']:.2f} |")
    return "\n".join(lines)


def best_points(points):
    """The chosen-learning-rate point per (model, size, steps, data): the lr stage's best run,
    or the single run of a later stage."""
    best = {}
    for p in points:
        pt = p["point"]
        key = (pt["model"], pt["size"], pt["steps"], pt["data"])
        if key not in best or p["train"]["heldout_loss"] < best[key]["train"]["heldout_loss"]:
            best[key] = p
    return best


FACTORS = [  # (factor, description, point A key, point B key)
    ("structure", "causal -> bidirectional, next-token objective", "ar-gpt2", "ar-bert"),
    ("structure", "causal -> bidirectional, uniform masking", "cmlm-gpt2", "cmlm-bert"),
    ("objective", "next token -> uniform masking, causal", "ar-gpt2", "cmlm-gpt2"),
    ("objective", "next token -> uniform masking, bidirectional", "ar-bert", "cmlm-bert"),
    ("objective", "uniform masking -> 15% masking, bidirectional", "cmlm-bert", "mlm-bert"),
]


def causes(points):
    """Rows (factor, change, model(s), gap A -> B, validity A -> B) for one-factor differences."""
    best = best_points(points)
    big = sweep_plan.CONVERGED_STEPS
    rows = []

    def row(factor, change, a, b):
        va, vb = headline(a), headline(b)
        rows.append((factor, change, a["likelihood"]["nll"]["gap"], b["likelihood"]["nll"]["gap"],
                     va["value"], vb["value"]))

    for factor, change, ma, mb in FACTORS:
        a, b = best.get((ma, "small", big, "fresh")), best.get((mb, "small", big, "fresh"))
        if a and b:
            row(factor, change, a, b)
    for name in MODELS:
        small, tiny = best.get((name, "small", big, "fresh")), best.get((name, "tiny", big, "fresh"))
        if small and tiny:
            row("scale", f"{name}: tiny -> small", tiny, small)
        repeated = best.get((name, "small", big, "repeated"))
        if small and repeated:
            row("data", f"{name}: repeated corpus -> fresh sentences", repeated, small)
        budgets = sorted((p for (m, s, _, d), p in best.items() if m == name and s == "small" and d == "fresh"),
                         key=lambda p: p["point"]["steps"])
        if len(budgets) >= 2:
            row("compute", f"{name}: {budgets[0]['point']['steps']} -> {budgets[-1]['point']['steps']} steps",
                budgets[0], budgets[-1])
    return rows


def causes_table(rows):
    lines = ["| factor | change | NLL gap | validity (L2R/AR sampled) |", "|---|---|---|---|"]
    for factor, change, ga, gb, va, vb in rows:
        lines.append(f"| {factor} | {change} | {ga:.3f} -> {gb:.3f} ({gb - ga:+.3f}) | "
                     f"{va:.0%} -> {vb:.0%} ({(vb - va) * 100:+.0f} pts) |")
    return "\n".join(lines)


def plot_compute(points, path):
    """NLL gap and sampled validity against training FLOPs, one line per model and size."""
    best = best_points(points)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, name in enumerate(MODELS):
        for size, style in (("small", "-"), ("tiny", ":")):
            pts = sorted((p for (m, s, _, d), p in best.items() if m == name and s == size and d == "fresh"),
                         key=lambda p: p["train"]["flops"])
            if not pts:
                continue
            flops = [p["train"]["flops"] for p in pts]
            label = f"{name} ({size})"
            axes[0].plot(flops, [p["likelihood"]["nll"]["gap"] for p in pts], style, marker="o", color=f"C{i}", label=label)
            axes[1].plot(flops, [headline(p)["value"] for p in pts], style, marker="o", color=f"C{i}", label=label)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("NLL - floor (nats/token)")
    axes[1].set_ylabel("validity, sampled left to right")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs")
    axes[1].legend(fontsize=7)
    fig.suptitle("Gap to the grammar's floor and quality against training compute")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(points, path):
    """Held-out objective loss minus its floor during training, the converged small points."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, name in enumerate(MODELS):
        p = best_points(points).get((name, "small", sweep_plan.CONVERGED_STEPS, "fresh"))
        if not p or p["train"]["heldout_floor"] is None:
            continue
        steps = [e[0] for e in p["train"]["eval"]]
        ax.plot(steps, [e[1] - p["train"]["heldout_floor"] for e in p["train"]["eval"]], color=f"C{i}", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out objective loss - its floor")
    ax.set_title("Learning curves (small, largest budget)")
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results):
    """README.md, compute.png and curves.png in `results`; returns the paths written."""
    results = Path(results)
    points = load_points(results)
    if not points:
        return []
    plot_compute(points, results / "compute.png")
    plot_curves(points, results / "curves.png")
    done = {p["point"]["key"] for p in points}
    todo = [p.key for p in sweep_plan.plan() if p.key not in done and not _resolved(p, points)]
    text = ["# The sweep: structure, objective, scale, data and compute", "",
            "Written by `python -m benchmarks.sweep` from `points/*.json` (one file per trained model; "
            "the method is in docs/experiment.md). NLL: per token (words + `<eos>`) of 1000 held-out "
            "answers given their prompts, the floor is the grammar's exact value; validity: share of "
            "continuations of the same held-out prompts that are valid sentences, with 95% Wilson intervals; "
            "last-quarter drop: how much the held-out training objective fell over the last quarter of the "
            "steps (near zero: near convergence).", "",
            "![compute](compute.png)", "", "![curves](curves.png)", "",
            "## Which factor moves quality", "",
            causes_table(causes(points)) if causes(points) else "(no pair of points differing in one factor yet)", "",
            "## Every point", "", table(points), "",
            f"## Still to run ({len(todo)} points)", "",
            ("`python -m benchmarks.sweep --commit` resumes with: " + ", ".join(todo[:12])
             + (" ..." if len(todo) > 12 else "")) if todo else "Nothing: the plan is complete.", ""]
    (results / "README.md").write_text("\n".join(text))
    return [results / "README.md", results / "compute.png", results / "curves.png"]


def _resolved(point, points):
    """A best-lr point is done when a point of the same model, size, steps and data exists."""
    pt = point.as_dict()
    return point.lr is None and any(
        all(p["point"][k] == pt[k] for k in ("model", "size", "steps", "data")) for p in points)


def write_card(folder, point):
    """README.md of a bundled checkpoint, from its sweep point."""
    pt, tr, lk = point["point"], point["train"], point["likelihood"]
    spec = MODELS[pt["model"]]
    arch = "LlamaForCausalLM" if spec.causal else "EuroBertForMaskedLM"
    quality = "\n".join(f"  - {name}: {_validity(row)} valid, {row['mean_words']:.1f} words on average"
                        for name, row in point["quality"].items())
    text = f"""# {pt['model']}: the experiment's {'causal' if spec.causal else 'bidirectional'} {spec.objective} model

Trained from scratch by `python -m benchmarks.sweep` (point `{pt['key']}`); the model and its
objective are described in docs/experiment.md and benchmarks/objectives.py. Saved as a standard
HF `{arch}` (pre-norm RMSNorm / rotary / SwiGLU transformer, tied head), fp16 safetensors.

- **Size**: {tr['params']:,} parameters ({pt['size']}).
- **Training**: {pt['steps']} steps of {tr['config']['batch_size']} sentences ({pt['data']} data),
  {tr['tokens']:,} tokens, {tr['flops']:.2e} FLOPs, AdamW peak lr {pt['lr']:g}, seed {tr['config']['seed']},
  {tr['seconds']} s on one CPU thread.
- **Held-out NLL** per token of answers given prompts: {lk['nll']['model']:.4f}; the grammar's exact
  floor {lk['nll']['floor']:.4f}; gap {lk['nll']['gap']:.4f} nats/token.
- **Decoded continuations** of 1000 held-out prompts (95% Wilson intervals):
{quality}
- **Retrain**: `python -m benchmarks.train --models {pt['model']} --size {pt['size']} --steps {pt['steps']} --lr {pt['lr']:g} --data {pt['data']} --seed {tr['config']['seed']}`
"""
    (Path(folder) / "README.md").write_text(text)
