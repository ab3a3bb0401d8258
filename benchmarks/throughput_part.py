"""Part 2 of the report: what each mode delivers per second, against its HF baseline.

Every point decodes one batch of held-out prompts of equal token length (so HF needs no
padding), the same prompts for both modes: AR greedy to its natural length (it stops at
`<eos>`), mask-predict with the length head and T passes. Engine and baseline alternate over
the repetitions after a warm-up; each point keeps every repetition's seconds (median and
spread), the engine/HF ratio of the medians with the spread of the paired per-repetition
ratios, and what the outputs are worth: words, valid outputs and valid words per second. On
CPU each point is then repeated with timers inside both models' calls: the split of each
side's time between the model and its own work around it.
Latency: Poisson arrivals replayed through Engine.step() for both modes at the same rates.
"""
import statistics

from tqdm import tqdm

from engine import SamplingParams

from . import hf_baselines, throughput
from .decode_configs import DecodeConfig, length_head_params, request_seeds
from .engine_decode import engine_decode
from .frame import MAX_SLOTS, frame_of_length_token
from .suite import Run


def _batch(items, batch):
    return [items[i % len(items)] for i in range(batch)]


def _prompt_ids(tokenizer, texts, special):
    """Token ids of equal length: each text's ids cut to the shortest's."""
    ids = [tokenizer(t, add_special_tokens=special)["input_ids"] for t in texts]
    n = min(len(i) for i in ids)
    return [i[:n] for i in ids]


def _worth(run, prompt_texts, texts):
    """Words, valid outputs and valid words of a batch's outputs (validity: reference language)."""
    words = [len(t.split()) for t in texts]
    out = {"words": sum(words)}
    if run.language is not None:
        valid = [lp > float("-inf") for lp in run.language.log_probs(texts, prompt_texts)]
        out.update(valid_outputs=int(sum(valid)), valid_words=int(sum(w for w, v in zip(words, valid) if v)))
    return out


def _rates(row):
    """tokens/s, words/s and valid words/s of a row, at its median time."""
    seconds = row["seconds"]["median"]
    row["tokens_per_s"] = row["generated_tokens"] / seconds
    row["words_per_s"] = row["words"] / seconds
    if "valid_words" in row:
        row["valid_words_per_s"] = row["valid_words"] / seconds
    if "hf_seconds" in row:
        row["hf_tokens_per_s"] = row["generated_tokens"] / row["hf_seconds"]["median"]
    return row


def _split(run, llm, hf, engine_fn, baseline_fn):
    """On CPU, where each side's time goes (throughput.time_split): {} elsewhere."""
    if run.device != "cpu":
        return {}
    model = llm.engine.loaded.model
    return {"split": throughput.time_split(engine_fn, baseline_fn, [(model, "forward"), (model, "compute_logits")],
                                           [(hf, "forward")], run.sizes.reps)}


def _timed(run, engine_fn, baseline_fn):
    sizes = run.sizes
    return throughput.timed_point(engine_fn, baseline_fn, run.device, sizes.warmup, sizes.reps,
                                  sizes.point_seconds, sizes.max_reps)


def ar_point(run, llm, hf, prompt_texts, prompt_ids):
    tok = llm.tokenizer
    limit = llm.engine.loaded.max_positions - len(prompt_ids[0])
    params = SamplingParams(temperature=0.0, max_tokens=limit)
    eos = tok.eos_token_id
    engine_fn = lambda: llm.generate(prompt_ids, params)  # noqa: E731
    baseline_fn = lambda: hf_baselines.hf_generate(hf, prompt_ids, limit, eos)  # noqa: E731
    outs, hf_rows, summary = _timed(run, engine_fn, baseline_fn)
    tokens = [list(o.token_ids) for o in outs]
    texts = [tok.decode(t[:t.index(eos)] if eos in t else t, skip_special_tokens=False).strip() for t in tokens]
    row = {"mode": "ar", "config": "AR greedy", "batch": len(prompt_ids), "model": run.name(run.ar_path),
           "generated_tokens": sum(map(len, tokens)), "generated": list(map(len, tokens)),
           "same_as_hf": tokens == hf_rows, **summary, **_worth(run, prompt_texts, texts),
           **_split(run, llm, hf, engine_fn, baseline_fn)}
    return _rates(row)


def mp_point(run, path, llm, hf, prompt_texts, prompt_ids, passes):
    spec, sizes, tok = run.spec(path), run.sizes, llm.tokenizer
    config = DecodeConfig(f"T={passes}", "mp", passes=passes)
    seeds = request_seeds(0, len(prompt_ids))
    length_head = spec is not None and spec.length_head
    fixed = None if length_head else [sizes.new_tokens] * len(prompt_ids)
    engine_fn = lambda: engine_decode(llm, spec, config, prompt_ids, seeds, fixed_frame=sizes.new_tokens)[0]  # noqa: E731
    baseline_fn = lambda: hf_baselines.hf_framed_mask_predict(  # noqa: E731
        hf, tok, prompt_ids, passes, fixed, lambda t: frame_of_length_token(t) or MAX_SLOTS)
    outs, hf_rows, summary = _timed(run, engine_fn, baseline_fn)
    frames = [o.frame for o in outs]
    head = 1 if length_head else 0
    row = {"mode": "mp", "config": config.name, "passes_setting": str(passes), "batch": len(prompt_ids),
           "model": run.name(path), "length_head": length_head,
           "generated_tokens": sum(frames), "frames": frames, "encoder_passes": [o.passes - head for o in outs],
           "mean_passes": statistics.mean(o.passes for o in outs), "max_passes": max(o.passes for o in outs),
           "same_as_hf": [o.token_ids for o in outs] == hf_rows, **summary,
           **_worth(run, prompt_texts, [o.text for o in outs]), **_split(run, llm, hf, engine_fn, baseline_fn)}
    return _rates(row)


def throughput_part(run: Run):
    sizes = run.sizes
    mp_path = next(iter(run.mlm_paths.values()))
    ar_llm, mp_llm = run.llm(run.ar_path), run.llm(mp_path)
    hf_ar = hf_baselines.load_hf(run.ar_path, "causal", run.device, run.torch_dtype)
    hf_mp = hf_baselines.load_hf(mp_path, "masked", run.device, run.torch_dtype)
    points = [("ar", b, None) for b in sizes.batch_sizes]
    points += [("mp", b, t) for b in sizes.batch_sizes for t in sizes.throughput_passes]
    rows = []
    for mode, batch, passes in tqdm(points, desc="throughput", unit="point"):
        texts = _batch(run.throughput_prompts, batch)
        if mode == "ar":
            ids = _prompt_ids(ar_llm.tokenizer, texts, True)
            run.results["throughput_prompt_tokens"] = len(ids[0])
            rows.append(ar_point(run, ar_llm, hf_ar, texts, ids))
        else:
            ids = _prompt_ids(mp_llm.tokenizer, texts, False)
            rows.append(mp_point(run, mp_path, mp_llm, hf_mp, texts, ids, passes))
    run.results["throughput"] = rows
    run.results["latency"] = latency(run, rows, mp_path)


def latency(run: Run, rows, mp_path):
    """Both modes at the same Poisson arrival rates: fractions of AR's measured capacity."""
    sizes = run.sizes
    largest = max((r for r in rows if r["mode"] == "ar"), key=lambda r: r["batch"])
    capacity = largest["batch"] / largest["seconds"]["median"]  # requests/s
    prompts = _batch(run.throughput_prompts, sizes.latency_requests)
    ar_llm, mp_llm = run.llm(run.ar_path), run.llm(mp_path)
    ar_ids = _prompt_ids(ar_llm.tokenizer, prompts, True)
    mp_ids = _prompt_ids(mp_llm.tokenizer, prompts, False)
    limit = ar_llm.engine.loaded.max_positions - len(ar_ids[0])
    spec = run.spec(mp_path)
    config = DecodeConfig("T=4", "mp", passes=4)
    if spec is not None and spec.length_head:
        tok = mp_llm.tokenizer

        def frame_of(out):
            return frame_of_length_token(tok.convert_ids_to_tokens(out.token_ids[0])) or MAX_SLOTS

        mp_stages = [lambda i: length_head_params(0.0), lambda i, out: config.mp_params(frame_of(out))]
    else:
        mp_stages = [lambda i: config.mp_params(sizes.new_tokens)]
    out = []
    for load in sizes.latency_load:
        rate = load * capacity
        for mode, path, ids, stages, name in (
            ("ar", run.ar_path, ar_ids, [lambda i: SamplingParams(temperature=0.0, max_tokens=limit)], "AR greedy"),
            ("mp", mp_path, mp_ids, mp_stages, "T=4"),
        ):
            result = throughput.poisson_replay(run.llm(path).engine, ids, stages, rate, seed=0)
            result.update(mode=mode, config=name, load=load, model=run.name(path))
            out.append(result)
    return out


def profile_part(run: Run, out_dir):
    """Chrome/Perfetto traces of a short AR and mask-predict batch, with the engine's ranges."""
    from engine import MaskPredictParams
    from engine.profiling import profile

    texts = _batch(run.throughput_prompts, 4)
    mp_path = next(iter(run.mlm_paths.values()))
    paths = {}
    for mode, path, params, special in (
        ("ar", run.ar_path, SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True), True),
        ("mp", mp_path, MaskPredictParams(length=run.sizes.new_tokens // 2, iterations=4), False),
    ):
        llm = run.llm(path)
        prompts = _prompt_ids(llm.tokenizer, texts, special)
        llm.generate(prompts, params)  # warm-up outside the trace
        trace = out_dir / f"trace_{mode}.json"
        with profile(str(trace)):
            llm.generate(prompts, params)
        paths[mode] = trace.name
    run.results["profile"] = paths
