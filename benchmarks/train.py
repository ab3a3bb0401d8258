"""Train models of the experiment (benchmarks/objectives.py) on the reference language.

    python -m benchmarks.train --models ar-gpt2,cmlm-bert --steps 16000 --out DIR

Each model is a `benchmarks.transformer.Transformer` trained with AdamW (linear warm-up, then
cosine decay to a tenth of the peak rate) on its objective's batches; the held-out loss (the
same objective on fixed held-out sentences, cuts and masks) is logged during training beside
its exact floor under the grammar. Every random draw (initialisation, data, cuts, masks) comes
from generators seeded by --seed and the step, so a rerun with the same arguments, thread count
and library versions reproduces the losses exactly, and an interrupted run resumes from its last
saved state to the same result. `benchmarks.sweep` drives this for the experiment's grid; the
bundled checkpoints in benchmarks/assets are the sweep's largest-budget points.
"""
import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from benchmarks import likelihood
from benchmarks.corpus import DATA_KINDS, SentenceStream, sample_ids
from benchmarks.language import ReferenceLanguage
from benchmarks.objectives import MODELS, SpecialIds, batch_loss, batch_losses, make_batch, valid_cuts
from benchmarks.tokenizer import build_tokenizer
from benchmarks.transformer import SIZES, Transformer, forward_flops, num_params, save_checkpoint

HELDOUT_SEED = 1_000_003  # the held-out sentences; training steps draw from other seeds
STATE_FILE = "train_state.pt"


@dataclass(frozen=True)
class TrainConfig:
    model: str = "ar-gpt2"
    size: str = "small"
    steps: int = 4000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: float = 0.02  # fraction of the steps
    weight_decay: float = 0.01
    data: str = "fresh"
    corpus_size: int = 50_000  # repeated data only
    seed: int = 0
    eval_every: int = 500
    eval_sentences: int = 1000

    def check(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {self.size!r}")
        if self.data not in DATA_KINDS:
            raise ValueError(f"data must be one of {DATA_KINDS}, got {self.data!r}")
        for name in ("steps", "batch_size", "corpus_size", "eval_every", "eval_sentences"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        return self

    def learning_rate(self, step):
        warm = max(1, int(self.warmup * self.steps))
        if step < warm:
            return self.lr * (step + 1) / warm
        progress = (step - warm) / max(1, self.steps - warm)
        return self.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


class HeldOut:
    """Fixed held-out batches of one model's objective and the exact floors of its losses."""

    def __init__(self, config: TrainConfig, lang, ids: SpecialIds):
        spec, size = MODELS[config.model], SIZES[config.size]
        sentences = [s for s in sample_ids(lang, config.eval_sentences, HELDOUT_SEED)
                     if valid_cuts(len(s), size.context)]
        rng = np.random.default_rng(HELDOUT_SEED)
        self.batches = [make_batch(spec, sentences[i:i + 256], ids, rng, size.context)
                        for i in range(0, len(sentences), 256)]
        self.floor, self.length_floor = likelihood.objective_floors(lang, spec, self.batches, size.context)

    @torch.no_grad()
    def losses(self, model):
        """(answer loss, length loss or None) over all held-out batches."""
        model.eval()
        device = next(model.parameters()).device
        answer = length = 0.0
        for b in self.batches:
            a, n = batch_losses(model, b.to(device))
            answer += float(a) * b.norm
            length += float(n) * b.length_norm if n is not None else 0.0
        model.train()
        length_norm = sum(b.length_norm for b in self.batches)
        return answer / sum(b.norm for b in self.batches), (length / length_norm if length_norm else None)


def train_model(config: TrainConfig, lang=None, state_dir=None, progress=True, device="cpu"):
    """Train one model on `device` -> (model in eval mode on the CPU, log dict). With
    `state_dir`, the optimizer state is saved there every eval and a run finding one resumes
    from it."""
    config.check()
    lang = lang or ReferenceLanguage()
    spec, size = MODELS[config.model], SIZES[config.size]
    ids = SpecialIds.of(vocab_size=len(build_tokenizer("plain", lang.words)))
    torch.manual_seed(config.seed)
    model = Transformer(size, ids.vocab, causal=spec.causal).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay)
    stream = SentenceStream(lang, config.data, config.seed, config.corpus_size)
    heldout = HeldOut(config, lang, ids)
    log = {"config": asdict(config), "params": num_params(model), "train_loss": [], "eval": [],
           "tokens": 0, "flops": 0.0, "seconds": 0.0, "heldout_floor": heldout.floor,
           "heldout_length_floor": heldout.length_floor}
    start_step = _resume(state_dir, model, opt, log)
    bar = tqdm(range(start_step, config.steps), desc=f"{config.model} {config.size} {config.steps}",
               initial=start_step, total=config.steps, mininterval=5.0, disable=not progress)
    window, began = [], time.perf_counter() - log["seconds"]
    for step in bar:
        rng = np.random.default_rng([config.seed, step, 1])
        batch = make_batch(spec, stream.batch(step, config.batch_size), ids, rng, size.context).to(device)
        for group in opt.param_groups:
            group["lr"] = config.learning_rate(step)
        loss = batch_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        log["tokens"] += batch.tokens
        log["flops"] += 3.0 * forward_flops(size, ids.vocab, batch.seq_lens, int((batch.targets != -100).sum()))
        window.append(loss.item())
        if len(window) == 50:
            log["train_loss"].append([step + 1, round(sum(window) / len(window), 5)])
            window = []
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            log["eval"].append([step + 1, *heldout.losses(model)])
            log["seconds"] = time.perf_counter() - began
            bar.set_postfix(heldout=f"{log['eval'][-1][1]:.4f}", floor=str(heldout.floor and round(heldout.floor, 4)))
            if state_dir and step + 1 < config.steps:
                _save_state(state_dir, step + 1, model, opt, log)
    log["seconds"] = round(time.perf_counter() - began, 1)
    log["heldout_loss"], log["heldout_length_loss"] = log["eval"][-1][1:]
    if state_dir and os.path.exists(os.path.join(state_dir, STATE_FILE)):
        os.remove(os.path.join(state_dir, STATE_FILE))
    # the saved checkpoint holds fp16 weights: evaluate exactly what is saved
    model = model.cpu()
    for p in model.parameters():
        p.data = p.data.half().float()
    return model.eval(), log


def _save_state(folder, step, model, opt, log):
    os.makedirs(folder, exist_ok=True)
    torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict(),
                "log": json.dumps(log), "rng": torch.get_rng_state()}, os.path.join(folder, STATE_FILE))


def _resume(folder, model, opt, log):
    path = os.path.join(folder, STATE_FILE) if folder else None
    if not path or not os.path.exists(path):
        return 0
    state = torch.load(path, weights_only=True, map_location=next(model.parameters()).device)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    log.update(json.loads(state["log"]))
    torch.set_rng_state(state["rng"])
    return state["step"]


def save_model(model, log, folder, lang=None):
    """HF checkpoint (benchmarks/transformer.py), the family's tokenizer, train_log.json."""
    lang = lang or ReferenceLanguage()
    spec = MODELS[log["config"]["model"]]
    ids = SpecialIds.of(model.vocab_size)
    extra = {"experiment_model": spec.name, "experiment_objective": spec.objective}
    save_checkpoint(model, folder, ids.hf(), extra)
    template = "causal" if not spec.framed else "bert"
    build_tokenizer(template, lang.words, model_max_length=model.size.context).save_pretrained(folder)
    with open(os.path.join(folder, "train_log.json"), "w") as f:
        json.dump(log, f)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/assets", help="folder; each model is saved to OUT/<model>")
    p.add_argument("--models", default="ar-gpt2,cmlm-bert,mlm-bert",
                   help=f"comma-separated subset of {','.join(MODELS)}")
    defaults = TrainConfig()
    p.add_argument("--size", default=defaults.size, choices=sorted(SIZES), help="model size (benchmarks/transformer.py)")
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="sentences per step")
    p.add_argument("--lr", type=float, default=defaults.lr, help="AdamW peak learning rate")
    p.add_argument("--data", default=defaults.data, choices=DATA_KINDS,
                   help="fresh: new sentences every step; repeated: epochs over --corpus-size sentences")
    p.add_argument("--corpus-size", type=int, default=defaults.corpus_size, help="sentences of the repeated corpus")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of initialisation, data, cuts and masks")
    p.add_argument("--eval-every", type=int, default=defaults.eval_every, help="steps between held-out evaluations")
    p.add_argument("--eval-sentences", type=int, default=defaults.eval_sentences, help="held-out sentences")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--no-save", action="store_true", help="train and report only")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad or not args.models:
        p.error(f"--models takes a subset of {','.join(MODELS)}, got {bad or 'nothing'}")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    lang = ReferenceLanguage()
    logs = {}
    for name in args.models:
        config = replace(TrainConfig(), model=name, size=args.size, steps=args.steps, batch_size=args.batch_size,
                         lr=args.lr, data=args.data, corpus_size=args.corpus_size, seed=args.seed,
                         eval_every=args.eval_every, eval_sentences=args.eval_sentences)
        try:
            config.check()
        except ValueError as e:
            raise SystemExit(f"python -m benchmarks.train: {e}")
        model, log = train_model(config, lang)
        print(f"{name}: {log['params']:,} params, held-out loss {log['heldout_loss']:.4f} "
              f"(floor {log['heldout_floor']:.4f}), {log['seconds']}s")
        if not args.no_save:
            save_model(model, log, os.path.join(args.out, name), lang)
        logs[name] = log
    return logs


if __name__ == "__main__":
    main()
