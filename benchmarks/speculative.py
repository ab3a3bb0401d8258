"""python -m benchmarks.speculative: speculative decoding against plain AR, by batch size.

For each batch size, the same greedy requests (held-out reference-language prompts, up to
--new-tokens tokens, stopping at <eos>) run through the target alone and through every
speculative configuration: the masked draft (the bundled CMLM) with k draft tokens in
--passes encoder passes, the small causal draft with k tokens, and the adaptive choice of
k for each draft. Calls are timed round-robin (plain, config 1, config 2, ..., repeated
--reps times, the order rotated each round) so that a slow spell of this shared machine
hits every configuration alike; the speed-up is the plain median over the configuration's
median, with the range of the per-round ratios. The outputs are checked token for token
against plain decoding (greedy speculation must change nothing), and the engine's counters
give the mean accepted length (tokens per verify step) and the acceptance per slot.

The roofline account prices, from the models' shapes and the machine's ceilings measured
in the same run, a plain decode step, a verify forward of k + 1 rows per sequence, and the
draft's work; with the measured accepted length it bounds the speed-up at each batch size.

Writes speculative.json, speculative.md and speculative.png into --out (default
benchmarks/results/<date>-<machine>/, beside the main report).
"""
import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoConfig

from engine import LLM, SamplingParams

from . import roofline, speculative_report
from .ceilings import measure_ceilings
from .language import ReferenceLanguage
from .machine import machine_name, results_folder
from .timing import median_seconds

ASSETS = Path(__file__).parent / "assets"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.speculative", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu = torch.cuda.is_available()
    p.add_argument("--quick", action="store_true", help="CI sizes: batches 1 and 4, k = 2, one pass, one round")
    p.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/<date>-<machine>)")
    p.add_argument("--target", default=str(ASSETS / "ar-gpt2"), help="causal LM to speed up (default: the bundled ar-gpt2)")
    p.add_argument("--masked-draft", default=str(ASSETS / "cmlm-bert"),
                   help="masked LM draft sharing the target's tokenizer (default: the bundled CMLM)")
    p.add_argument("--causal-draft", default=str(ASSETS / "ar-gpt2-draft"),
                   help="smaller causal LM draft sharing the target's tokenizer (default: the bundled 23k-parameter ar-gpt2-draft)")
    p.add_argument("--batch-sizes", type=_ints, default=(1, 4, 16, 64, 256) if gpu else (1, 4, 16, 64),
                   help="comma-separated batch sizes (default 1,4,16,64 on CPU; up to 256 on GPU)")
    p.add_argument("--ks", type=_ints, default=(2, 4, 8), help="draft tokens per step to try (default 2,4,8)")
    p.add_argument("--passes", type=_ints, default=(1, 2), help="masked-draft encoder passes to try (default 1,2)")
    p.add_argument("--new-tokens", type=int, default=32, help="most tokens generated per request (default 32)")
    p.add_argument("--min-requests", type=int, default=16,
                   help="a timed call runs batches of the same size until this many requests (default 16)")
    p.add_argument("--reps", type=int, default=3, help="timed rounds over all configurations (default 3)")
    p.add_argument("--device", default="cuda" if gpu else "cpu", help="cuda or cpu")
    p.add_argument("--dtype", default="auto", help="float32, float16, bfloat16 or auto (fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the held-out prompts")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.ks, args.passes = (1, 4), (2,), (1,)
        args.new_tokens, args.min_requests, args.reps = 8, 4, 1
    return args


def _ints(text):
    values = tuple(int(v) for v in text.split(","))
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def configurations(args, draft_length):
    """label -> speculative_config (None: the target alone)."""
    masked = lambda k, **o: {"model": args.masked_draft, "num_speculative_tokens": k, "draft_length": max(k, draft_length), **o}  # noqa: E731
    configs = {"plain": None}
    configs |= {f"masked k={k} p={p}": masked(k, draft_passes=p) for k in args.ks for p in args.passes if p <= k}
    configs |= {f"causal k={k}": {"model": args.causal_draft, "num_speculative_tokens": k} for k in args.ks}
    k = max(args.ks)
    configs["masked adaptive"] = masked(k, adaptive=True)
    configs["causal adaptive"] = {"model": args.causal_draft, "num_speculative_tokens": k, "adaptive": True}
    return configs


def prompts(n, seed):
    """Held-out sentences cut after their first third of words (at least two)."""
    return [" ".join(s.split()[: max(2, len(s.split()) // 3)]) for s in ReferenceLanguage().sample(n, seed)]


def _answer_slots(path):
    """The answer length a CMLM was trained to fill (config cmlm_answer_slots), else 0."""
    config = json.loads((Path(path) / "config.json").read_text())
    return int(config.get("cmlm_answer_slots") or 0)


def run_batches(llm, groups, params):
    """Each group of prompts run as one batch through the engine: (outputs, engine steps)."""
    engine, outputs, steps = llm.engine, [], 0
    for group in groups:
        ids = [engine.add_request(p, params) for p in group]
        done = {}
        while engine.has_unfinished():
            done |= {o.request_id: o for o in engine.step() if o.finished}
            steps += 1
        outputs += [done[i] for i in ids]
    return outputs, steps


def measure(args):
    calls = {b: max(1, -(-args.min_requests // b)) for b in args.batch_sizes}
    requests = prompts(max(b * calls[b] for b in args.batch_sizes), args.seed)
    greedy = SamplingParams(temperature=0.0, max_tokens=args.new_tokens)
    common = dict(device=args.device, dtype=args.dtype, max_num_seqs=max(args.batch_sizes))
    configs = configurations(args, _answer_slots(args.masked_draft))
    llms = {label: LLM(args.target, speculative_config=spec, **common) for label, spec in configs.items()}
    labels, rows = list(configs), []
    for batch in tqdm(args.batch_sizes, desc="batch sizes"):
        groups = [requests[i * batch: (i + 1) * batch] for i in range(calls[batch])]
        before = {label: _spec_counters(llm) for label, llm in llms.items()}
        times = {label: [] for label in configs}
        steps, identical, reference = {}, {label: True for label in configs}, None
        for rnd in range(args.reps + 1):  # round 0 warms up
            for label in labels[rnd % len(labels):] + labels[: rnd % len(labels)]:
                found = []
                seconds = median_seconds(lambda: found.append(run_batches(llms[label], groups, greedy)),  # noqa: B023
                                         args.device, warmup=0, reps=1)
                outputs, steps[label] = found[0]
                tokens = [o.token_ids for o in outputs]
                reference = reference or (tokens if label == "plain" else None)
                identical[label] &= reference is None or tokens == reference
                if rnd:
                    times[label].append(seconds)
        generated = sum(map(len, reference))
        for label in configs:
            ratios = [p / s for p, s in zip(times["plain"], times[label])]
            seconds = statistics.median(times[label])
            rows.append({
                "config": label, "batch": batch, "generated_tokens": generated, "seconds": seconds,
                "tokens_per_s": generated / seconds, "steps": steps[label], "ms_per_step": 1e3 * seconds / steps[label],
                "speedup": statistics.median(times["plain"]) / seconds,
                "speedup_range": [min(ratios), max(ratios)], "identical_to_plain": identical[label],
                **_delta(_spec_counters(llms[label]), before[label]),
            })
    return configs, rows, llms


def _spec_counters(llm):
    spec = llm.engine.stats().get("speculative")
    if spec is None:
        return {}
    return {"num_steps": spec["num_steps"], "num_drafted": spec["num_drafted"], "num_accepted": spec["num_accepted"],
            "per_position": (list(llm.engine.executor.totals.drafted_per_position),
                             list(llm.engine.executor.totals.accepted_per_position))}


def _delta(after, before):
    """Acceptance counted over the timed calls of one batch size."""
    if not after:
        return {}
    steps = after["num_steps"] - before["num_steps"]
    accepted = after["num_accepted"] - before["num_accepted"]
    drafted_now, accepted_now = after["per_position"]
    drafted_then, accepted_then = before["per_position"]
    per_position = [(a - (accepted_then[j] if j < len(accepted_then) else 0))
                    / max(1, d - (drafted_then[j] if j < len(drafted_then) else 0))
                    for j, (d, a) in enumerate(zip(drafted_now, accepted_now))]
    return {"verify_steps": steps, "mean_accepted_length": (accepted + steps) / steps if steps else None,
            "acceptance_per_position": per_position}


def roofline_account(args, configs, rows, llms):
    """Roofline bounds of a plain step, a verify step and the draft's work, and the speed-up
    bound they give with each configuration's measured accepted length."""
    engine = llms["plain"].engine
    dtype = next(engine.loaded.model.parameters()).dtype
    bpp = torch.tensor([], dtype=dtype).element_size()
    ceil = measure_ceilings(args.device, dtype, quick=args.quick)
    ceilings = roofline.Ceilings(bandwidth=max(ceil["copy_gbps"], ceil["read_gbps"]) * 1e9,
                                 flops=ceil["matmul_tflops"] * 1e12)
    shape = roofline.ModelShape.from_hf_config(engine.loaded.hf_config, bpp)
    drafts = {kind: roofline.ModelShape.from_hf_config(AutoConfig.from_pretrained(path), bpp)
              for kind, path in (("masked", args.masked_draft), ("causal", args.causal_draft))}
    prompt = statistics.mean(len(engine.tokenizer.encode(p)) for p in prompts(max(args.batch_sizes), args.seed))
    context = int(prompt + args.new_tokens / 2)
    plain_ms = {r["batch"]: r["ms_per_step"] for r in rows if r["config"] == "plain"}
    bounds = []
    for row in rows:
        spec = configs[row["config"]]
        if spec is None or spec.get("adaptive") or row.get("mean_accepted_length") is None:
            continue
        b, k = row["batch"], spec["num_speculative_tokens"]
        plain = ceilings.seconds(*roofline.ar_decode_step(shape, b, context))
        verify = ceilings.seconds(*verify_step(shape, b, context, k))
        if "draft_passes" in spec:
            draft = spec["draft_passes"] * ceilings.seconds(*roofline.mp_pass(drafts["masked"], b, context, spec["draft_length"]))
        else:
            draft = k * ceilings.seconds(*roofline.ar_decode_step(drafts["causal"], b, context))
        bounds.append({"config": row["config"], "batch": b, "plain_step_s": plain, "verify_step_s": verify,
                       "draft_s": draft, "verify_over_plain": verify / plain,
                       "step_cost_roofline": (verify + draft) / plain,
                       "step_cost_measured": row["ms_per_step"] / plain_ms[b],
                       "plain_step_over_roofline": plain_ms[b] / 1e3 / plain,
                       "speedup_roofline": row["mean_accepted_length"] * plain / (verify + draft)})
    return {"ceilings": ceil, "context": context, "target_shape": vars(shape),
            "draft_shapes": {kind: vars(s) for kind, s in drafts.items()},
            "ridge_rows": ridge_rows(shape, ceilings, context), "bounds": bounds}


def verify_step(shape, batch, context, k):
    """(bytes, flops) of a verify forward: k + 1 query rows per sequence over its cached context."""
    rows = batch * (k + 1)
    nbytes = shape.weight_bytes + batch * (context + k) * shape.kv_bytes_per_token()
    nflops = rows * 2 * shape.matmul_params + shape.attention_flops(rows, context + k) + shape.head_flops(rows)
    return nbytes, nflops


def ridge_rows(shape, ceilings, context, limit=1 << 20):
    """Tokens per forward at which the target's step turns compute-bound on this machine."""
    rows = 1
    while rows < limit:
        nbytes, nflops = roofline.ar_decode_step(shape, rows, context)
        if nflops / ceilings.flops >= nbytes / ceilings.bandwidth:
            return rows
        rows *= 2
    return None


def _shown(path) -> str:
    """A checkpoint path as the report shows it: relative to the repository when inside it."""
    root = Path(__file__).resolve().parent.parent
    resolved = Path(path).resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else Path(path).name


def _shown_argv(argv):
    """The command's options as the report shows them (without --out, a path of this machine)."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(args):
        if a == "--out":
            return args[:i] + args[i + 2:]
        if a.startswith("--out="):
            return args[:i] + args[i + 1:]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    out = results_folder(args.out, args.device)
    configs, rows, llms = measure(args)
    results = {
        "meta": {"command": " ".join(["python -m benchmarks.speculative", *_shown_argv(argv)]),
                 "machine": machine_name(args.device), "device": args.device, "date": str(datetime.date.today()),
                 "torch": torch.__version__, "threads": torch.get_num_threads(), "target": _shown(args.target),
                 "masked_draft": _shown(args.masked_draft), "causal_draft": _shown(args.causal_draft),
                 "new_tokens": args.new_tokens, "reps": args.reps, "min_requests": args.min_requests},
        "configs": {label: c and {**c, "model": _shown(c["model"])} for label, c in configs.items()},
        "rows": rows,
        "roofline": roofline_account(args, configs, rows, llms),
    }
    (out / "speculative.json").write_text(json.dumps(results, indent=1))
    speculative_report.write(results, out)
    print(f"wrote {out / 'speculative.md'}")
    return results


if __name__ == "__main__":
    main()
