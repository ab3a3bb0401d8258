"""Part 1 of the report: quality as distributions, decoded by the engine.

Every model decodes the same held-out prompts (default 1000), each request with its own seed;
sampled configurations run under several seeds and are pooled (validity with its 95% Wilson
interval over all their samples, and the per-seed range). Each row reports validity, validity
by output length, the output-length histogram's distance to the held-out continuations', the
exact NLL per token of the valid outputs, and, for samplers of the bundled models, the
sampler's own entropy per token (the quality-entropy frontier across temperatures).
"""
import math
import statistics

import numpy as np
from tqdm import tqdm

from . import quality, stats
from .decode_configs import DecodeConfig, request_seeds
from .engine_decode import engine_decode
from .frame import answer_slots
from .suite import Run


def configs_for(run: Run, path):
    """(DecodeConfig, seeds) of a model: the seeds a configuration runs under. The causal model
    and the uniformly masked one are sampled at every temperature of the frontier (several
    seeds at temperature 1); the others decode greedily (the 15% MLM at T=1 and N only)."""
    sizes, spec = run.sizes, run.spec(path)
    all_seeds, first = list(range(sizes.sampling_seeds)), [0]
    causal = path == run.ar_path
    kind = "ar" if causal else "l2r"
    out = []
    if causal:
        out.append((DecodeConfig("AR greedy", "ar"), first))
    else:
        uniform = spec is None or spec.objective == "uniform"
        passes = sizes.passes if uniform else (1, "N")
        out += [(DecodeConfig(f"T={t}", "mp", passes=t), first) for t in passes]
        if spec is not None:
            out.append((DecodeConfig("L2R greedy", "l2r"), first))
    if causal or (spec is not None and spec.objective == "uniform"):
        for t in sizes.temperatures:
            name = f"{'AR' if causal else 'L2R'} sampled, temp {t:g}"
            out.append((DecodeConfig(name, kind, t), all_seeds if t == 1.0 else first))
    if spec is not None and spec.length_head:
        out.append((DecodeConfig("T=N oracle frame", "mp", oracle_frame=True), first))
    return out


def quality_part(run: Run):
    rows = []
    plan = [(label, path, config, seed) for label, path in run.models() for config, seeds in configs_for(run, path)
            for seed in seeds]
    oracle = None
    if run.references:
        oracle = [answer_slots(min(len(r.split()), 31)) for r in run.references]
    samples, judge = {}, _Judge(run) if run.judge_path else None
    for label, path, config, seed in tqdm(plan, desc="quality", unit="config"):
        llm, spec = run.llm(path), run.spec(path)
        seeds = request_seeds(seed, len(run.prompts))
        outs, seconds = engine_decode(llm, spec, config, run.prompts, seeds,
                                      oracle if config.oracle_frame else None, fixed_frame=run.sizes.new_tokens)
        texts = [o.text for o in outs]
        row = {"label": label, "model": run.name(path), "config": config.name, "kind": config.kind,
               "temperature": config.temperature, "passes_setting": str(config.passes), "seed": seed,
               "prompts": len(texts), "seconds": seconds, "mean_passes": statistics.mean(o.passes for o in outs),
               "words": sum(o.words for o in outs), "distinct_2": quality.distinct_n(texts, 2),
               "repeat_rate": quality.repeated_token_rate(texts)}
        if run.language is not None:
            row.update(quality.language_scores(run.language, run.prompts, texts, run.references))
            if config.temperature > 0 and seed == 0 and spec is not None:
                row["sampler_nll_per_token"] = _sampler_entropy(path, spec, run, outs, config.temperature)
        if judge is not None:
            row["judge_perplexity"] = judge(texts)
        rows.append(row)
        samples.setdefault(f"{row['model']} {config.name}", texts[:3])
    run.results["quality"] = {"rows": rows, "pooled": pool_seeds(rows), "samples": samples,
                              "prompts": run.prompts[:3], "reference": _reference(run)}


def _pooled_proportion(parts):
    """One proportion (with its Wilson interval) from several stats.proportion dicts."""
    valid = sum(round((p["value"] or 0) * p["n"]) for p in parts)  # an empty stratum has value None
    return stats.proportion(valid, sum(p["n"] for p in parts))


def pool_seeds(rows):
    """One row per (model, config) over all its seeds' outputs: validity and its length
    strata pooled (with the per-seed range of validity), lengths and rates averaged; the
    other fields are the first seed's."""
    groups = {}
    for r in rows:
        groups.setdefault((r["model"], r["config"]), []).append(r)
    pooled = []
    for (model, config), group in groups.items():
        row = {k: v for k, v in group[0].items() if k not in ("seed", "validity")}
        row["seeds"] = len(group)
        row["seconds"] = statistics.median(r["seconds"] for r in group)
        for key in ("mean_passes", "mean_words", "words"):  # mean_words only with the reference language
            if key in row:
                row[key] = statistics.mean(r[key] for r in group)
        if "length_histogram" in row:
            row["length_histogram"] = [statistics.mean(h) for h in zip(*(r["length_histogram"] for r in group))]
            row["length_tv"] = stats.total_variation(row["length_histogram"], row["reference_length_histogram"])
        if "validity" in group[0]:
            row["validity"] = _pooled_proportion([r["validity"] for r in group])
            row["validity_by_length"] = {s: _pooled_proportion([r["validity_by_length"][s] for r in group])
                                         for s in group[0]["validity_by_length"]}
            row["validity_per_seed"] = [r["validity"]["value"] for r in group]
            row["valid_words"] = statistics.mean(r["valid_words"] for r in group)
        pooled.append(row)
    return pooled


def _reference(run):
    """The held-out continuations themselves: length histogram and exact NLL per token (the
    entropy of the reference distribution given the prompts, estimated by its own samples)."""
    if run.language is None or not run.references:
        return None
    logp = run.language.log_probs(run.references, run.prompts)
    words = np.array([len(r.split()) for r in run.references])
    per_token = float(-logp.sum() / (words + 1).sum())
    return {"entropy_per_token": per_token, "mean_words": float(words.mean()),
            "length_histogram": stats.histogram(words, quality.LENGTH_BINS)}


def _sampler_entropy(path, spec, run, outs, temperature):
    """Mean -log q_T(sample) per token (words + <eos>) under the sampler: benchmarks/likelihood.py."""
    from . import likelihood
    from .decoding import banned_mask
    from .objectives import SpecialIds
    from .transformer import load_checkpoint

    model, _ = load_checkpoint(path)
    tok = run.llm(path).tokenizer
    ids = SpecialIds.of(len(tok))
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in run.prompts]
    if not spec.framed:
        nll = likelihood.sampling_nll_causal(model, prompts, [o.token_ids for o in outs], ids, temperature)
    else:
        nll = likelihood.sampling_nll_left_to_right(model, prompts, [o.token_ids for o in outs], ids,
                                                    banned_mask(ids, tok.all_special_ids), temperature,
                                                    spec.length_head)
    tokens = sum(o.words + 1 for o in outs)
    return float(nll.sum() / tokens) if math.isfinite(nll.sum()) else None


class _Judge:
    """Perplexity of continuations under the --judge checkpoint, loaded on first use."""

    def __init__(self, run):
        self.run, self.model = run, None

    def __call__(self, texts):
        from transformers import AutoTokenizer

        from .hf_baselines import load_hf

        run = self.run
        if self.model is None:
            self.model = load_hf(run.judge_path, "causal", run.device, run.torch_dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(run.judge_path)
        return quality.judge_perplexity(self.model, self.tokenizer, run.prompts, texts, run.device)
