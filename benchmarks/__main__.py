"""python -m benchmarks: the headline report, autoregression against mask-predict.

Writes report.md, results.json and PNG plots into --out (default
benchmarks/results/<date>-<machine>/). On the bundled models it takes a few minutes on a
CPU; on a GPU it uses GPU batch sizes.
"""
import argparse
import datetime
import json
import random
from pathlib import Path

import torch
import transformers

from . import plots, report, suite
from .machine import machine_name

ASSETS = Path(__file__).parent / "assets"
PARTS = ("quality", "throughput", "roofline")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI sizes: few prompts, T in {1, 4, N}, batches 1 and 4")
    p.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/<date>-<machine>)")
    p.add_argument("--ar-model", default=str(ASSETS / "ar-gpt2"),
                   help="causal LM checkpoint folder (HF format; default: the bundled GPT-2)")
    p.add_argument("--cmlm-model", default=None,
                   help="CMLM-trained masked LM folder. With neither masked-LM flag, the bundled CMLM and MLM "
                        "are both used; with one, only the one given")
    p.add_argument("--mlm-model", default=None,
                   help="masked LM folder (e.g. a BERT trained with 15%% masking); see --cmlm-model")
    p.add_argument("--judge", default=None, help="causal LM folder whose perplexity scores every output (optional)")
    p.add_argument("--prompts", type=Path, default=None,
                   help="text file, one prompt per line (default: held-out prompts of the reference language)")
    p.add_argument("--reference-language", action=argparse.BooleanOptionalAction, default=None,
                   help="score outputs with the reference language (default: on for the bundled models only)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--dtype", default="auto", help="float32, float16, bfloat16 or auto (fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--kernel-backend", default=None, choices=["triton", "torch"],
                   help="engine kernels (default: triton on CUDA, torch references on CPU)")
    p.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS, help="which parts to run (default: all)")
    p.add_argument("--profile", action="store_true", help="also write torch.profiler Chrome traces (part 5)")
    p.add_argument("--seed", type=int, default=1234,
                   help="seed of the held-out prompts (the bundled models trained on seed 0's sentences)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for engine and baselines alike (default: 1 on CPU, where the "
                        "bundled models are small and extra threads only add barrier waits; torch's default on CUDA)")
    return p.parse_args(argv)


def language_prompts(language, n, seed):
    """Held-out sentences, each cut after a random 2..6 words into a prompt."""
    rng = random.Random(seed)
    sentences = language.sample(n, seed)
    prompts = []
    for s in sentences:
        words = s.split()
        prompts.append(" ".join(words[: rng.randint(2, min(6, max(2, len(words) - 1)))]))
    return prompts, sentences


def _answer_slots(mlm_paths):
    """The answer length a CMLM checkpoint was trained with (config.cmlm_answer_slots), if any."""
    for path in mlm_paths.values():
        config = Path(path) / "config.json"
        if config.exists():
            slots = json.loads(config.read_text()).get("cmlm_answer_slots")
            if slots:
                return int(slots)
    return None


def build_run(args):
    given = {label: path for label, path in (("cmlm", args.cmlm_model), ("mlm", args.mlm_model)) if path}
    mlm_paths = given or {"cmlm": str(ASSETS / "cmlm-bert"), "mlm": str(ASSETS / "mlm-bert")}
    bundled = args.ar_model == str(ASSETS / "ar-gpt2") and all(str(ASSETS) in p for p in mlm_paths.values())
    use_language = bundled if args.reference_language is None else args.reference_language
    sizes = suite.Sizes.quick() if args.quick else (suite.Sizes.gpu() if args.device.startswith("cuda") else suite.Sizes())
    run = suite.Run(ar_path=args.ar_model, mlm_paths=mlm_paths, device=args.device, dtype=args.dtype,
                    kernel_backend=args.kernel_backend, sizes=sizes, judge_path=args.judge)
    slots = _answer_slots(mlm_paths)
    if slots:
        sizes.new_tokens = slots  # the CMLM was trained to fill exactly this many slots
    if use_language:
        from .language import ReferenceLanguage

        run.language = ReferenceLanguage()
    if args.prompts:
        lines = [ln.strip() for ln in args.prompts.read_text().splitlines() if ln.strip()]
        if not lines:
            raise SystemExit(f"--prompts {args.prompts} holds no prompt")
        run.prompts, run.long_prompts = lines[: sizes.quality_prompts], lines
    else:  # the reference language's sentences are English-like text for any tokenizer
        from .language import ReferenceLanguage

        run.prompts, run.long_prompts = language_prompts(run.language or ReferenceLanguage(), sizes.quality_prompts,
                                                         args.seed)
    return run


def main(argv=None):
    args = parse_args(argv)
    threads = args.threads or (None if args.device.startswith("cuda") else 1)
    if threads:
        torch.set_num_threads(threads)
    run = build_run(args)
    out = args.out or Path("benchmarks/results") / f"{datetime.date.today()}-{machine_name(args.device)}"
    out.mkdir(parents=True, exist_ok=True)
    if "quality" in args.parts:
        suite.quality_part(run)
    if "throughput" in args.parts:
        suite.throughput_part(run)
    if "roofline" in args.parts:
        suite.roofline_part(run)
    if args.profile:
        suite.profile_part(run, out)
    run.results["meta"] = {
        "date": str(datetime.date.today()), "machine": machine_name(args.device), "device": args.device,
        "dtype": str(run.torch_dtype).replace("torch.", ""),
        "kernel_backend": run.llm(run.ar_path).engine.config.kernel_backend,
        "torch": torch.__version__, "transformers": transformers.__version__, "quick": args.quick,
        "threads": torch.get_num_threads(),
        "ar_model": run.ar_path, "mlm_models": run.mlm_paths, "sizes": vars(run.sizes),
    }
    (out / "results.json").write_text(json.dumps(run.results, indent=2, default=str))
    figures = plots.all_plots(run.results, out)
    (out / "report.md").write_text(report.render(run.results, figures))
    print(f"wrote {out / 'report.md'}, {out / 'results.json'} and {len(figures)} plots")


if __name__ == "__main__":
    main()
