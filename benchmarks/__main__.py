"""python -m benchmarks: the headline report, autoregression against mask-predict.

Writes report.md, results.json and PNG plots into --out (default
benchmarks/results/<date>-<machine>/). On the bundled models it takes about five minutes on a
2-core CPU; on a GPU it uses GPU batch sizes. The parts: 1. quality as distributions (1000
held-out prompts, a seed per request, several seeds), 2. throughput in valid words per second
and latency, with the engine against HF in the same run, 3. the roofline with the workload's
ceilings and a measured fixed cost per step, 4. quality against throughput, 5. profiles, 6.
speculative decoding when `python -m benchmarks.speculative` has written into the same folder.
"""
import argparse
import datetime
import json
import os
from pathlib import Path

import torch
import transformers

from . import plots, quality_part, report, roofline_part, suite, throughput_part
from .machine import machine_name, results_folder

ASSETS = Path(__file__).parent / "assets"
PARTS = ("quality", "throughput", "roofline")
PROMPTS_SEED = 2_000_003  # the sweep's held-out pairs (benchmarks/evaluate.py): the same prompts


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI sizes: 64 prompts, 2 seeds, batches 1 and 4")
    p.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/<date>-<machine>)")
    p.add_argument("--ar-model", default=str(ASSETS / "ar-gpt2"),
                   help="causal LM checkpoint folder (HF format; default: the bundled causal model)")
    p.add_argument("--cmlm-model", default=None,
                   help="CMLM-trained masked LM folder. With neither masked-LM flag, the bundled CMLM and MLM "
                        "are both used; with one, only the one given")
    p.add_argument("--mlm-model", default=None,
                   help="masked LM folder (e.g. a BERT trained with 15%% masking); see --cmlm-model")
    p.add_argument("--judge", default=None, help="causal LM folder whose perplexity scores every output (optional)")
    p.add_argument("--prompts", type=Path, default=None,
                   help="text file, one prompt per line (default: held-out prompts of the reference language)")
    p.add_argument("--reference-language", action=argparse.BooleanOptionalAction, default=None,
                   help="score outputs with the reference language (default: on for the experiment's models)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--dtype", default="auto", help="float32, float16, bfloat16 or auto (fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--kernel-backend", default=None, choices=["triton", "torch"],
                   help="engine kernels (default: triton on CUDA, torch references on CPU)")
    p.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS,
                   help="which parts to run (default: all; the roofline needs the throughput part)")
    p.add_argument("--profile", action="store_true", help="also write torch.profiler Chrome traces (part 5)")
    p.add_argument("--seed", type=int, default=PROMPTS_SEED, help="seed of the held-out prompts")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for engine and baselines alike (default: 1 on CPU, where the "
                        "bundled models are small and extra threads only add barrier waits; torch's default on CUDA)")
    return p.parse_args(argv)


def _prompts(args, run, language):
    """Quality prompts with their held-out continuations, and equal-length throughput prompts."""
    from .corpus import heldout_pairs, ids_to_text
    from .objectives import frame_fits

    sizes = run.sizes
    if args.prompts:
        lines = [ln.strip() for ln in args.prompts.read_text().splitlines() if ln.strip()]
        if not lines:
            raise SystemExit(f"--prompts {args.prompts} holds no prompt")
        return lines[: sizes.quality_prompts], [], lines
    context = 64
    pairs = heldout_pairs(language, sizes.quality_prompts, args.seed, fits=lambda k, a: frame_fits(k, a, context))
    words = sizes.prompt_words
    short = heldout_pairs(language, max(sizes.batch_sizes), args.seed + 1,
                          fits=lambda k, a: k == words and frame_fits(k, a, context))
    text = lambda ids: ids_to_text(language, ids)  # noqa: E731
    return [text(p) for p, _ in pairs], [text(a) for _, a in pairs], [text(p) for p, _ in short]


def build_run(args):
    given = {label: path for label, path in (("cmlm", args.cmlm_model), ("mlm", args.mlm_model)) if path}
    mlm_paths = given or {"cmlm": str(ASSETS / "cmlm-bert"), "mlm": str(ASSETS / "mlm-bert")}
    experiment = all(suite.experiment_spec(p) is not None for p in [args.ar_model, *mlm_paths.values()])
    use_language = experiment if args.reference_language is None else args.reference_language
    sizes = suite.Sizes.quick() if args.quick else (suite.Sizes.gpu() if args.device.startswith("cuda") else suite.Sizes())
    run = suite.Run(ar_path=args.ar_model, mlm_paths=mlm_paths, device=args.device, dtype=args.dtype,
                    kernel_backend=args.kernel_backend, sizes=sizes, judge_path=args.judge)
    from .language import ReferenceLanguage

    language = ReferenceLanguage()
    if use_language:
        run.language = language
    run.prompts, references, run.throughput_prompts = _prompts(args, run, language)
    run.references = references if use_language else []
    return run


def main(argv=None):
    args = parse_args(argv)
    threads = args.threads or (None if args.device.startswith("cuda") else 1)
    if threads:
        torch.set_num_threads(threads)
    run = build_run(args)
    out = results_folder(args.out, args.device)
    if "quality" in args.parts:
        quality_part.quality_part(run)
    if "throughput" in args.parts:
        throughput_part.throughput_part(run)
        if "roofline" in args.parts:
            roofline_part.roofline_part(run)
    if args.profile:
        throughput_part.profile_part(run, out)
    run.results["meta"] = {
        "date": str(datetime.date.today()), "machine": machine_name(args.device), "device": args.device,
        "dtype": str(run.torch_dtype).replace("torch.", ""),
        "kernel_backend": run.llm(run.ar_path).engine.config.kernel_backend,
        "torch": torch.__version__, "transformers": transformers.__version__, "quick": args.quick,
        "threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
        "ar_model": suite.display_path(run.ar_path),
        "mlm_models": {k: suite.display_path(v) for k, v in run.mlm_paths.items()},
        "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(run.sizes).items()},
        "experiment": run.language is not None,
    }
    (out / "results.json").write_text(json.dumps(run.results, indent=1, default=str))
    figures = plots.all_plots(run.results, out)
    speculative = out / "speculative.json"  # part 6, written by python -m benchmarks.speculative
    if speculative.exists():
        run.results["speculative"] = json.loads(speculative.read_text())
    (out / "report.md").write_text(report.render(run.results, figures))
    print(f"wrote {out / 'report.md'}, {out / 'results.json'} and {len(figures)} plots")


if __name__ == "__main__":
    main()
