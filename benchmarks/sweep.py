"""python -m benchmarks.sweep: train and evaluate the experiment's grid, resumably.

Runs the points of benchmarks/sweep_plan.py in order, skipping every point whose result is
already in --results (one JSON per point, benchmarks/results/sweep/points/ by default). A
point trains one model (benchmarks/train.py; its optimizer state is saved in --work every
evaluation, so an interrupted point resumes where it stopped), evaluates it
(benchmarks/evaluate.py), writes its JSON and, with --commit, commits that JSON with git. The
table and plots (benchmarks/sweep_report.py) are rebuilt after every point. Checkpoints stay in
--work (not committed); --bundle copies the converged small points into benchmarks/assets.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks import evaluate, sweep_plan, sweep_report, train
from benchmarks.language import ReferenceLanguage
from benchmarks.objectives import MODELS, SpecialIds
from benchmarks.tokenizer import build_tokenizer
from benchmarks.transformer import SIZES

RESULTS = Path("benchmarks/results/sweep")
ASSETS = Path("benchmarks/assets")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="*", default=list(sweep_plan.STAGES), choices=sweep_plan.STAGES,
                   help="stages to run, in the plan's order (default: all)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated models to run (default: all five)")
    p.add_argument("--max-points", type=int, default=None, help="stop after this many newly finished points")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of points/*.json, the table and plots")
    p.add_argument("--work", type=Path, default=Path(".sweep"), help="checkpoints and resumable training state")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where training runs (cpu or cuda); evaluation runs on the CPU")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--eval-pairs", type=int, default=1000, help="held-out prompts for likelihoods and decoding")
    p.add_argument("--commit", action="store_true", help="git-commit each finished point's JSON, table and plots")
    p.add_argument("--list", action="store_true", help="print the plan with each point's status, run nothing")
    p.add_argument("--report-only", action="store_true", help="rebuild the table and plots from the JSON files")
    p.add_argument("--reevaluate", action="store_true",
                   help="re-run the evaluation of finished points from their checkpoints in --work (no training)")
    p.add_argument("--bundle", action="store_true",
                   help="copy the converged small checkpoints from --work into benchmarks/assets and exit")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = set(args.models) - set(MODELS)
    if unknown:
        p.error(f"--models takes names from {','.join(MODELS)}, got {sorted(unknown)}")
    return args


def point_path(results, point):
    return results / "points" / f"{point.key}.json"


def load_point(results, point):
    path = point_path(results, point)
    return json.loads(path.read_text()) if path.exists() else None


def resolve_lr(results, point):
    """The point's learning rate: its own, or the best of its lr candidates (None: not run yet)."""
    if point.lr is not None:
        return point.lr
    done = [load_point(results, c) for c in sweep_plan.lr_candidates(point)]
    if any(d is None for d in done):
        return None
    return min(done, key=lambda d: d["train"]["heldout_loss"])["point"]["lr"]


def run_point(point, lr, args, lang):
    """Train, evaluate and save one point -> its result dict."""
    config = train.TrainConfig(model=point.model, size=point.size, steps=point.steps, lr=lr, data=point.data,
                               corpus_size=sweep_plan.REPEATED_CORPUS)
    folder = args.work / point.key
    load_before = os.getloadavg()
    model, log = _trained(folder, config)
    if model is None:
        model, log = train.train_model(config, lang, state_dir=folder, device=args.device)
        train.save_model(model, log, folder, lang)
    result = {"point": {**point.as_dict(), "lr": lr, "key": point.key}, "train": log,
              "machine": {"cpu": platform.processor() or platform.machine(), "device": args.device,
                          "threads": torch.get_num_threads(), "load_before": load_before}}
    return evaluate_point(result, model, args, lang)


def _trained(folder, config):
    """(model, log) of a point trained before an interruption during its evaluation, else (None, None)."""
    from benchmarks.transformer import load_checkpoint

    log_file = folder / "train_log.json"
    if not log_file.exists() or not (folder / "model.safetensors").exists():
        return None, None
    log = json.loads(log_file.read_text())
    if log.get("config") != asdict(config):
        return None, None
    return load_checkpoint(folder)[0], log


def evaluate_point(result, model, args, lang):
    """Add (or replace) a point's evaluation: likelihoods and decoded quality."""
    config = train.TrainConfig(**result["train"]["config"])
    spec, size = MODELS[config.model], SIZES[config.size]
    tokenizer = build_tokenizer("bert" if spec.framed else "causal", lang.words, model_max_length=size.context)
    ids = SpecialIds.of(len(tokenizer))
    heldout = None
    if spec.framed:  # the random-order NLL: the uniform-masking objective on this model
        uniform = "cmlm-gpt2" if spec.causal else "cmlm-bert"
        heldout = train.HeldOut(replace(config, model=uniform), lang, ids)
    started = time.perf_counter()
    pairs = evaluate.eval_pairs(lang, args.eval_pairs, size.context)
    result.update(evaluate.evaluate_model(model, config.model, lang, tokenizer, pairs, size.context, heldout))
    result["eval_seconds"] = round(time.perf_counter() - started, 1)
    result["machine"]["load_after"] = os.getloadavg()
    return result


def reevaluate(points, args, lang):
    """Re-run the evaluation of every finished point of `points` from its saved checkpoint."""
    from benchmarks.transformer import load_checkpoint

    done = [p for p in points if point_path(args.results, p).exists()]
    for point in tqdm(done, desc="re-evaluate", unit="point"):
        result = load_point(args.results, point)
        model, _ = load_checkpoint(args.work / point.key)
        path = point_path(args.results, point)
        path.write_text(json.dumps(evaluate_point(result, model, args, lang), indent=1))
    written = sweep_report.write(args.results)
    if args.commit and done:
        commit([point_path(args.results, p) for p in done] + written, "sweep: re-evaluated the finished points")


def commit(paths, message):
    subprocess.run(["git", "add", "--", *map(str, paths)], check=True)
    subprocess.run(["git", "commit", "-q", "-m", message, "--", *map(str, paths)], check=True)


def bundle(args):
    """Copy the converged small checkpoints (config, weights, tokenizer, log) into assets, with
    a model card each, and the shared tokenizer."""
    lang = ReferenceLanguage()
    build_tokenizer("plain", lang.words, model_max_length=SIZES["small"].context).save_pretrained(ASSETS / "tokenizer")
    for name in MODELS:
        point = sweep_plan.Point("converged", name, "small", sweep_plan.CONVERGED_STEPS, None)
        source = args.work / point.key
        if not (source / "model.safetensors").exists():
            raise SystemExit(f"no checkpoint for {point.key} in {args.work}: run the converged stage first")
        target = ASSETS / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(train.STATE_FILE))
        sweep_report.write_card(target, load_point(args.results, point))
        print(f"bundled {point.key} -> {target}")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.bundle:
        return bundle(args)
    points = [p for p in sweep_plan.plan() if p.stage in args.stages and p.model in args.models]
    if args.list:
        for p in points:
            print(f"{'done' if point_path(args.results, p).exists() else 'todo'}  {p.stage:9s} {p.key}")
        return
    if args.report_only:
        sweep_report.write(args.results)
        return
    lang = ReferenceLanguage()
    if args.reevaluate:
        return reevaluate(points, args, lang)
    todo = [p for p in points if not point_path(args.results, p).exists()]
    finished = 0
    for point in tqdm(todo, desc="sweep", unit="point"):
        if args.max_points is not None and finished >= args.max_points:
            break
        lr = resolve_lr(args.results, point)
        if lr is None:
            print(f"skipping {point.key}: its learning-rate points have not run")
            continue
        result = run_point(point, lr, args, lang)
        path = point_path(args.results, point)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        written = sweep_report.write(args.results)
        finished += 1
        if args.commit:
            commit([path, *written], f"sweep: {point.key} ({point.stage}), held-out loss "
                                     f"{result['train']['heldout_loss']:.4f}")


if __name__ == "__main__":
    main()
