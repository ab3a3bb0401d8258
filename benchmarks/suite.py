"""The five parts of the headline report, each a function from a run context to results.

A `Run` holds the models (engine + HF baseline), the reference language and the sizes;
each part appends plain dicts to the results, so report.py and plots.py work from JSON.
"""
import math
import statistics
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from engine import LLM, MaskPredictParams, SamplingParams

from . import hf_baselines, quality, roofline, throughput
from .ceilings import measure_ceilings


@dataclass
class Sizes:
    """How much work each part does; --quick shrinks everything for CI."""

    quality_prompts: int = 128
    iterations: tuple = (1, 2, 4, 8, 16, None)  # None = T equal to the length
    remask_modes: tuple = ("low_confidence", "commit", "random")
    batch_sizes: tuple = (1, 4, 16, 64)
    throughput_iterations: tuple = (1, 4, None)
    throughput_prompt_words: int = 8
    new_tokens: int = 32
    latency_requests: int = 64
    reps: int = 5
    small_ceilings: bool = False  # measure the ceilings on small tensors too

    @classmethod
    def quick(cls):
        return cls(quality_prompts=16, iterations=(1, 4, None), remask_modes=("low_confidence",),
                   batch_sizes=(1, 4), throughput_iterations=(2, None), latency_requests=8, reps=1, small_ceilings=True)

    @classmethod
    def gpu(cls):
        return cls(quality_prompts=256, batch_sizes=(1, 4, 16, 64, 256), latency_requests=256, reps=3)


@dataclass
class Run:
    ar_path: str
    mlm_paths: dict  # label -> checkpoint dir ("cmlm", "mlm")
    device: str
    dtype: str
    kernel_backend: str | None
    sizes: Sizes
    language: object = None  # benchmarks.language.ReferenceLanguage, None for real checkpoints
    judge_path: str | None = None
    prompts: list = field(default_factory=list)  # str prompts for the quality part
    long_prompts: list = field(default_factory=list)  # texts cut to fixed-length throughput prompts
    results: dict = field(default_factory=dict)
    _llms: dict = field(default_factory=dict)

    def llm(self, path):
        if path not in self._llms:
            self._llms[path] = LLM(path, device=self.device, dtype=self.dtype, kernel_backend=self.kernel_backend)
        return self._llms[path]

    @property
    def torch_dtype(self):
        return next(self.llm(self.ar_path).engine.loaded.model.parameters()).dtype


# ---- 1. quality against passes ------------------------------------------------------------

def _mp_configs(sizes, length):
    for t in sizes.iterations:
        for mode in sizes.remask_modes:
            yield f"T={t or length} {mode}", MaskPredictParams(length=length, iterations=t or length, remask=mode, seed=0)
    yield "threshold 0.9", MaskPredictParams(length=length, iterations=length, remask="commit", threshold=0.9)
    yield "blocks of 8, T=16", MaskPredictParams(length=length, iterations=16, remask="low_confidence", block_length=8)


def _score(run, prompts, texts):
    row = {
        "distinct_1": quality.distinct_n(texts, 1),
        "distinct_2": quality.distinct_n(texts, 2),
        "repeat_rate": quality.repeated_token_rate(texts),
    }
    if run.language is not None:
        lps = run.language.log_probs(texts, prompts)
        valid = [lp for lp in lps if math.isfinite(lp)]
        row["validity"] = len(valid) / len(texts)
        row["mean_log_prob_valid"] = statistics.mean(valid) if valid else None
    return row


def quality_part(run):
    prompts, rows = run.prompts, []
    configs = [("ar", run.ar_path, "greedy", SamplingParams(temperature=0.0, max_tokens=run.sizes.new_tokens)),
               ("ar", run.ar_path, "sampled T=1.0", SamplingParams(temperature=1.0, max_tokens=run.sizes.new_tokens, seed=0))]
    for label, path in run.mlm_paths.items():
        configs += [("mp", path, f"{label} {name}", p) for name, p in _mp_configs(run.sizes, run.sizes.new_tokens)]
    texts_by_config = {}
    for mode, path, name, params in tqdm(configs, desc="quality", unit="config"):
        llm = run.llm(path)
        start = time.perf_counter()
        outs = llm.generate(prompts, params)
        seconds = time.perf_counter() - start
        texts = [o.text.strip() for o in outs]
        tokens = sum(len(o.token_ids) for o in outs)
        words = sum(len(t.split()) for t in texts)  # mask-predict's eos padding slots are not words
        row = {"mode": mode, "model": path, "config": name, "prompts": len(prompts), "seconds": seconds,
               "generated_tokens": tokens, "tokens_per_s": tokens / seconds, "words": words,
               "words_per_s": words / seconds,
               "mean_nfe": statistics.mean(o.metrics.nfe for o in outs) if mode == "mp" else
               statistics.mean(o.metrics.generated_tokens for o in outs)}
        if mode == "mp":
            row.update(iterations=params.iterations, remask=params.remask, threshold=params.threshold,
                       block_length=params.block_length)
        row.update(_score(run, prompts, texts))
        texts_by_config[name] = texts
        rows.append(row)
    if run.judge_path:
        _judge(run, rows, texts_by_config)
    run.results["quality"] = rows
    run.results["samples"] = {"prompts": prompts[:3], "texts": {k: v[:3] for k, v in texts_by_config.items()}}


def _judge(run, rows, texts_by_config):
    """Perplexity of every configuration's continuations under the judge checkpoint."""
    from transformers import AutoTokenizer

    judge = hf_baselines.load_hf(run.judge_path, "causal", run.device, run.torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(run.judge_path)
    for row in rows:
        texts = texts_by_config[row["config"]]
        row["judge_perplexity"] = quality.judge_perplexity(judge, tokenizer, run.prompts, texts, run.device)


# ---- 2. throughput and latency against batch size -------------------------------------------

def _token_prompts(run, path, batch):
    """`batch` prompts of exactly throughput_prompt_words tokens each (no padding anywhere)."""
    tok = run.llm(path).tokenizer
    words = run.sizes.throughput_prompt_words
    base = [tok.encode(p, add_special_tokens=False) for p in run.long_prompts]
    base = [ids[:words] for ids in base if len(ids) >= words] or [[tok.unk_token_id] * words]
    return [base[i % len(base)] for i in range(batch)]


def throughput_part(run):
    sizes, rows = run.sizes, []
    hf_ar = hf_baselines.load_hf(run.ar_path, "causal", run.device, run.torch_dtype)
    cmlm_path = next(iter(run.mlm_paths.values()))
    hf_mlm = hf_baselines.load_hf(cmlm_path, "masked", run.device, run.torch_dtype)
    mlm_tok = run.llm(cmlm_path).tokenizer
    points = [("ar", b, None) for b in sizes.batch_sizes]
    points += [("mp", b, t) for b in sizes.batch_sizes for t in sizes.throughput_iterations]
    for mode, batch, t in tqdm(points, desc="throughput", unit="point"):
        if mode == "ar":
            prompts = _token_prompts(run, run.ar_path, batch)
            rows.append(throughput.ar_point(run.llm(run.ar_path), hf_ar, prompts, sizes.new_tokens, run.device, sizes.reps))
        else:
            prompts = _token_prompts(run, cmlm_path, batch)
            rows.append(throughput.mp_point(run.llm(cmlm_path), hf_mlm, mlm_tok, prompts, sizes.new_tokens,
                                            t or sizes.new_tokens, run.device, sizes.reps))
        rows[-1]["model"] = run.ar_path if mode == "ar" else cmlm_path
    run.results["throughput"] = rows
    run.results["latency"] = _latency(run, rows, cmlm_path)


def _latency(run, rows, cmlm_path):
    """Poisson arrivals at half of the largest measured throughput of each mode."""
    sizes, out = run.sizes, []
    n = sizes.latency_requests
    for mode, path, params in (
        ("ar", run.ar_path, SamplingParams(temperature=0.0, max_tokens=sizes.new_tokens, ignore_eos=True)),
        ("mp", cmlm_path, MaskPredictParams(length=sizes.new_tokens, iterations=min(8, sizes.new_tokens))),
    ):
        best = max(r["tokens_per_s"] for r in rows if r["mode"] == mode)
        rate = 0.5 * best / sizes.new_tokens  # requests per second
        prompts = _token_prompts(run, path, n)
        stats = throughput.poisson_replay(run.llm(path).engine, prompts, params, rate, seed=0)
        stats.update(mode=mode, model=path, config=f"T={params.iterations}" if mode == "mp" else "greedy")
        out.append(stats)
    return out


# ---- 3. roofline ----------------------------------------------------------------------------

def roofline_part(run):
    dtype = run.torch_dtype
    ceil = measure_ceilings(run.device, dtype, quick=run.sizes.small_ceilings)
    bandwidth = max(ceil["copy_gbps"], ceil["read_gbps"]) * 1e9
    ceilings = roofline.Ceilings(bandwidth=bandwidth, flops=ceil["matmul_tflops"] * 1e12)
    bpp = torch.tensor([], dtype=dtype).element_size()
    ar_cfg = run.llm(run.ar_path).engine.loaded.hf_config
    mp_path = next(iter(run.mlm_paths.values()))
    mp_cfg = run.llm(mp_path).engine.loaded.hf_config
    ar_shape = roofline.ModelShape.from_hf_config(ar_cfg, bpp)
    mp_shape = roofline.ModelShape.from_hf_config(mp_cfg, bpp)
    prompt, n = run.sizes.throughput_prompt_words, run.sizes.new_tokens
    iterations = sorted({t or n for t in run.sizes.throughput_iterations})
    batches = sorted(set(run.sizes.batch_sizes) | {2 ** k for k in range(0, 13)})
    predicted = [{
        "batch": b,
        "ar_tokens_per_s": roofline.ar_tokens_per_second(ar_shape, ceilings, b, prompt, n),
        **{f"mp_T{t}_tokens_per_s": roofline.mp_tokens_per_second(mp_shape, ceilings, b, prompt, n, t) for t in iterations},
    } for b in batches]
    ar_step = roofline.ar_decode_step(ar_shape, 1, prompt + n // 2)
    mp_pass = roofline.mp_pass(mp_shape, 1, prompt, n)
    run.results["roofline"] = {
        "ceilings": ceil,
        "ar_shape": vars(ar_shape), "mp_shape": vars(mp_shape),
        "ar_params": ar_shape.matmul_params + ar_shape.vocab * ar_shape.hidden,
        "mp_params": mp_shape.matmul_params + mp_shape.vocab * mp_shape.hidden,
        "per_token": {
            "ar_decode_flops": ar_step[1], "ar_decode_bytes_batch1": ar_step[0],
            "mp_pass_flops_per_token": mp_pass[1] / n, "mp_pass_bytes_batch1": mp_pass[0],
        },
        "predicted": predicted,
        "crossover_batch": {str(t): roofline.crossover_batch(ar_shape, mp_shape, ceilings, prompt, n, t) for t in iterations},
        "iterations": iterations,
    }


# ---- 5. profiling -----------------------------------------------------------------------------

def profile_part(run, out_dir):
    """Chrome/Perfetto traces of a short AR and mask-predict batch, with the engine's ranges."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.device.startswith("cuda") else [])
    paths = {}
    for mode, path, params in (
        ("ar", run.ar_path, SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)),
        ("mp", next(iter(run.mlm_paths.values())), MaskPredictParams(length=run.sizes.new_tokens, iterations=4)),
    ):
        prompts = _token_prompts(run, path, 4)
        run.llm(path).generate(prompts, params)  # warm-up outside the trace
        with profile(activities=activities) as prof:
            run.llm(path).generate(prompts, params)
        trace = out_dir / f"trace_{mode}.json"
        prof.export_chrome_trace(str(trace))
        paths[mode] = trace.name
    run.results["profile"] = paths
