"""Train the three matched bundled models on one sampled corpus of the reference language.

    python -m benchmarks.train --out benchmarks/assets            # all three, defaults below

(a) ar-gpt2: GPT-2 causal LM on `<bos> sentence <eos>`;
(b) mlm-bert: BERT masked LM on `[CLS] sentence [SEP]` with BERT's masking (15% of the words;
    of those 80% [MASK], 10% a random word, 10% unchanged);
(c) cmlm-bert: the same BERT trained as a conditional masked LM on the mask-predict template
    `[CLS] prompt answer [SEP]`: each sentence is split at a random point, the answer is padded
    with `<eos>` to a fixed number of slots, and a uniformly random fraction in (0, 1] of the
    slots is masked; the loss is on the masked slots.

All three share the architecture size (equal parameter counts within 5%), the context length,
the corpus, its order, the batch size and the number of steps. Every random draw comes from
generators seeded by --seed, so a rerun with the same arguments on the same machine and
library versions reproduces the losses exactly.
"""
import argparse
import json
import math
import os
import time

import torch
from tqdm import tqdm
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from benchmarks.language import ReferenceLanguage
from benchmarks.tokenizer import build_tokenizer

MODELS = ("ar", "mlm", "cmlm")
# The causal LM's held-out per-token loss may exceed the grammar's exact NLL of the same
# sentences (an estimate of the per-token KL) by at most this much (tests/test_bundled_models.py).
AR_LOSS_MARGIN = 0.1
FOLDERS = {"ar": "ar-gpt2", "mlm": "mlm-bert", "cmlm": "cmlm-bert"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/assets", help="folder for tokenizer/ and one folder per model")
    p.add_argument("--models", default="ar,mlm,cmlm", help="comma-separated subset of ar,mlm,cmlm")
    p.add_argument("--steps", type=int, default=4000, help="optimizer steps per model (all three alike)")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per step")
    p.add_argument("--corpus-size", type=int, default=50_000, help="training sentences sampled")
    p.add_argument("--eval-size", type=int, default=1000, help="held-out sentences (another seed)")
    p.add_argument("--eval-every", type=int, default=500, help="steps between held-out evaluations")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus, data order, masking and initialisation")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--hidden", type=int, default=96, help="hidden size of every model")
    p.add_argument("--layers", type=int, default=3, help="transformer layers of every model")
    p.add_argument("--heads", type=int, default=4, help="attention heads of every model")
    p.add_argument("--context", type=int, default=64, help="max positions of every model")
    p.add_argument("--answer-slots", type=int, default=20, help="CMLM answer length N")
    p.add_argument("--lr", type=float, default=4e-3, help="AdamW peak learning rate")
    p.add_argument("--warmup", type=int, default=80, help="linear warm-up steps; then the rate decays as sqrt(1 - step / steps)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-save", action="store_true", help="train and evaluate only")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad or not args.models:
        p.error(f"--models takes a subset of {','.join(MODELS)}, got {bad or 'nothing'}")
    for name in ("steps", "batch_size", "corpus_size", "eval_size", "eval_every", "hidden", "layers", "heads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.answer_slots + 3 > args.context:
        p.error("--answer-slots must leave room for [CLS], a prompt word and [SEP] in --context")
    return args


# --- data ------------------------------------------------------------------------------------
class Corpus:
    """Token ids of the sampled sentences (no specials) and the framings of the three models."""

    def __init__(self, lang, tok, n, seed, context):
        sampled = lang.sample_words(n, seed)
        # +3: the causal framing adds 2 tokens, the CMLM one needs a prompt of >= len + 1 - N words
        self.sentences = [s for s in sampled if len(s) + 3 <= context]
        self.ids = [tok.convert_tokens_to_ids(s) for s in self.sentences]
        self.dropped = len(sampled) - len(self.ids)  # longer than the context: vanishingly rare

    def grammar_nll(self, lang):
        """The grammar's exact NLL per token (words + end) of these sentences: the loss floor."""
        logp = lang.log_probs([" ".join(s) for s in self.sentences])
        return float(-logp.sum() / sum(len(s) + 1 for s in self.sentences))

    def batch_order(self, steps, batch_size, gen):
        """Sentence indices of every step: epochs of seeded permutations, concatenated."""
        need = steps * batch_size
        order = torch.cat([torch.randperm(len(self.ids), generator=gen)
                           for _ in range(math.ceil(need / len(self.ids)))])
        return order[:need].view(steps, batch_size)


def _pad(rows, pad_id, label_rows):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, label_rows)):
        ids[i, :len(r)] = torch.tensor(r)
        labels[i, :len(r)] = torch.tensor(lab)
        mask[i, :len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def frame_ar(sents, tok, gen, args):
    """<bos> sentence <eos>; HF shifts labels inside the model, <bos> itself is never predicted."""
    rows = [[tok.bos_token_id] + s + [tok.eos_token_id] for s in sents]
    return _pad(rows, tok.pad_token_id, [[-100] + r[1:] for r in rows])


def frame_mlm(sents, tok, gen, args):
    """BERT masking: each word selected with p=0.15 (at least one), then 80/10/10."""
    first_word, vocab = len(tok.all_special_tokens), len(tok)
    rows, labels = [], []
    for s in sents:
        x = torch.tensor(s)
        chosen = torch.rand(len(s), generator=gen) < 0.15
        if not chosen.any():
            chosen[torch.randint(len(s), (1,), generator=gen)] = True
        action = torch.rand(len(s), generator=gen)
        random_words = torch.randint(first_word, vocab, (len(s),), generator=gen)
        inp = torch.where(chosen & (action < 0.8), tok.mask_token_id, x)
        inp = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_words, inp)
        lab = torch.where(chosen, x, -100)
        rows.append([tok.cls_token_id] + inp.tolist() + [tok.sep_token_id])
        labels.append([-100] + lab.tolist() + [-100])
    return _pad(rows, tok.pad_token_id, labels)


def frame_cmlm(sents, tok, gen, args):
    """[CLS] prompt answer+<eos>* [SEP], N answer slots; ceil(u*N) slots masked, u ~ U(0, 1]."""
    n = args.answer_slots
    rows, labels = [], []
    for s in sents:
        lo, hi = max(0, len(s) + 1 - n), min(len(s) - 1, args.context - 2 - n)
        k = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        answer = torch.tensor(s[k:] + [tok.eos_token_id] * (n - len(s) + k))
        u = 1.0 - float(torch.rand((), generator=gen))  # in (0, 1]
        masked = torch.randperm(n, generator=gen)[:math.ceil(u * n)]
        inp, lab = answer.clone(), torch.full((n,), -100)
        inp[masked], lab[masked] = tok.mask_token_id, answer[masked]
        rows.append([tok.cls_token_id] + s[:k] + inp.tolist() + [tok.sep_token_id])
        labels.append([-100] * (k + 1) + lab.tolist() + [-100])
    return _pad(rows, tok.pad_token_id, labels)


FRAMES = {"ar": frame_ar, "mlm": frame_mlm, "cmlm": frame_cmlm}


# --- models ----------------------------------------------------------------------------------
def build_model(kind, tok, args):
    common = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                  bos_token_id=tok.bos_token_id)
    if kind == "ar":
        cfg = GPT2Config(n_positions=args.context, n_embd=args.hidden, n_layer=args.layers, n_head=args.heads,
                         n_inner=4 * args.hidden, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
        return GPT2LMHeadModel(cfg)
    cfg = BertConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                     intermediate_size=4 * args.hidden, max_position_embeddings=args.context, type_vocab_size=1,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **common)
    if kind == "cmlm":
        cfg.cmlm_answer_slots = args.answer_slots  # the N the model was trained with
    return BertForMaskedLM(cfg)


def num_params(model):
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def evaluate(model, batches, device):
    """Token-weighted mean loss (nats) over the labelled positions of fixed held-out batches."""
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        labels = b["labels"]
        if model.config.model_type == "gpt2":  # predict token t+1 from position t
            logits, labels = logits[:, :-1], labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
        total += loss.item()
        count += int((labels != -100).sum())
    model.train()
    return total / count


def train_one(kind, corpus, heldout, tok, args):
    """Returns (model, log dict). Data order, masking and init depend only on --seed."""
    torch.manual_seed(args.seed)
    model = build_model(kind, tok, args).to(args.device)
    frame = FRAMES[kind]
    order = corpus.batch_order(args.steps, args.batch_size, torch.Generator().manual_seed(args.seed))
    mask_gen = torch.Generator().manual_seed(args.seed + 1)
    eval_gen = torch.Generator().manual_seed(args.seed + 2)
    eval_batches = [frame(heldout.ids[i:i + 256], tok, eval_gen, args) for i in range(0, len(heldout.ids), 256)]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.warmup)
                                              * max(0.0, 1 - s / args.steps) ** 0.5)
    log = {"train_loss": [], "eval": [], "tokens": 0}
    start = time.time()
    bar = tqdm(range(args.steps), desc=FOLDERS[kind], mininterval=2.0)
    for step in bar:
        batch = frame([corpus.ids[i] for i in order[step].tolist()], tok, mask_gen, args)
        log["tokens"] += int(batch["attention_mask"].sum())
        batch = {k: v.to(args.device) for k, v in batch.items()}
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        log["train_loss"].append(round(loss.item(), 5))
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            log["eval"].append((step + 1, evaluate(model, eval_batches, args.device)))
            bar.set_postfix(heldout=f"{log['eval'][-1][1]:.4f}")
    log["seconds"] = round(time.time() - start, 1)
    log["heldout_loss"] = log["eval"][-1][1]
    log["params"] = num_params(model)
    return model, log


def main(argv=None):
    args = parse_args(argv)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    lang = ReferenceLanguage()
    plain = build_tokenizer("plain", lang.words, args.context)
    corpus = Corpus(lang, plain, args.corpus_size, args.seed, args.context)
    heldout = Corpus(lang, plain, args.eval_size, args.seed + 1_000_003, args.context)
    summary = {"entropy_rate": lang.entropy_rate(), "mean_tokens": lang.mean_tokens(),
               "heldout_grammar_nll": heldout.grammar_nll(lang), "corpus": len(corpus.ids),
               "dropped_too_long": corpus.dropped, "vocab": len(plain), "models": {}}
    if not args.no_save:
        plain.save_pretrained(os.path.join(args.out, "tokenizer"))
    for kind in args.models:
        model, log = train_one(kind, corpus, heldout, plain, args)
        summary["models"][kind] = log
        print(f"{FOLDERS[kind]}: {log['params']:,} params, held-out loss {log['heldout_loss']:.4f} "
              f"(entropy rate {summary['entropy_rate']:.4f}), {log['seconds']}s")
        if not args.no_save:
            save(model, kind, log, summary, args)
    return summary


def save(model, kind, log, summary, args):
    folder = os.path.join(args.out, FOLDERS[kind])
    model.half().save_pretrained(folder)
    build_tokenizer("causal" if kind == "ar" else "bert", model_max_length=args.context).save_pretrained(folder)
    write_log_and_card(folder, kind, log, summary, args)


def write_log_and_card(folder, kind, log, summary, args):
    with open(os.path.join(folder, "train_log.json"), "w") as f:
        json.dump({"args": vars(args), "entropy_rate": summary["entropy_rate"],
                   "heldout_grammar_nll": summary["heldout_grammar_nll"], **log}, f)
    write_card(folder, kind, log, summary, args)


CARD_FACTS = {
    "ar": ("GPT-2 causal LM (`GPT2LMHeadModel`)", "`<bos> sentence <eos>`; loss on every word and on `<eos>`",
           "per-token loss of words + `<eos>`, directly comparable with the grammar's entropy rate"),
    "mlm": ("BERT masked LM (`BertForMaskedLM`)", "`[CLS] sentence [SEP]`; BERT masking: 15% of the words, "
            "of those 80% `[MASK]`, 10% a random word, 10% unchanged; loss on the selected words",
            "loss on the selected words (not comparable with the entropy rate: the model sees both sides)"),
    "cmlm": ("BERT conditional masked LM (`BertForMaskedLM`, CMLM-trained)",
             "`[CLS] prompt answer [SEP]`: each sentence split at a random point (prompt of at most "
             "{p} words), the answer padded with `<eos>` to N = {n} slots (`config.cmlm_answer_slots`), "
             "ceil(u*N) slots masked with u ~ U(0, 1]; loss on the masked slots",
             "loss on the masked answer slots, masking fraction uniform as in training"),
}


def retrain_command(kind, args):
    flags = ["steps", "batch_size", "corpus_size", "eval_size", "seed", "hidden", "layers", "heads",
             "context", "answer_slots", "lr", "warmup", "threads"]
    opts = " ".join(f"--{f.replace('_', '-')} {getattr(args, f)}" for f in flags)
    return f"python -m benchmarks.train --out DIR --models {kind} {opts}"


def write_card(folder, kind, log, summary, args):
    arch, framing, metric = CARD_FACTS[kind]
    framing = framing.format(n=args.answer_slots, p=args.context - 2 - args.answer_slots)
    evals = ", ".join(f"{s}: {v:.4f}" for s, v in log["eval"])
    h = summary["entropy_rate"]
    floor = summary["heldout_grammar_nll"]
    gap = (f"; the grammar's exact NLL of the same sentences is {floor:.4f}, so the model is "
           f"{log['heldout_loss'] - floor:.4f} nats/token above the best possible "
           f"(`tests/test_bundled_models.py` requires less than {AR_LOSS_MARGIN} on another held-out "
           f"sample, and at least 95% valid greedy continuations of held-out prompts)") if kind == "ar" else ""
    floor_note = " (the expectation of that floor)" if kind == "ar" else ""
    text = f"""# {FOLDERS[kind]}: {arch} on the duodecode reference language

Trained from scratch by `benchmarks/train.py`; one of three matched models (same corpus, order,
batch, steps, context and parameter count within 5%) for comparing autoregressive decoding with
mask-predict. The tokenizer in this folder is the bundled word-level one
(`benchmarks/tokenizer.py`) with the {'causal template (prepends `<bos>`)' if kind == 'ar' else 'BERT template (`[CLS] ... [SEP]`)'}.

- **Data**: {summary['corpus']:,} sentences sampled from `benchmarks.language.ReferenceLanguage()`
  with seed {args.seed} ({summary['dropped_too_long']} longer than the context dropped); held-out:
  {args.eval_size:,} sentences with another seed. Framing: {framing}.
- **Architecture**: hidden {args.hidden}, {args.layers} layers, {args.heads} heads, context {args.context},
  vocabulary {summary['vocab']}; **{log['params']:,} parameters**; weights stored in fp16 (safetensors).
- **Training**: {args.steps} steps of {args.batch_size} sentences ({log['tokens']:,} tokens incl. specials
  and padding slots), AdamW lr {args.lr} (warmup {args.warmup}, sqrt decay), seed {args.seed},
  {log['seconds']} s on `{args.device}`.
- **Held-out loss** ({metric}; fp32 weights before the fp16 export): **{log['heldout_loss']:.4f}
  nats/token**{gap}. The grammar's exact entropy rate{floor_note} is {h:.4f} nats/token (words + end of sentence, {summary['mean_tokens']:.2f} tokens per sentence
  on average). Held-out loss during training (step: loss): {evals}.
- **Retrain**: `{retrain_command(kind, args)}`.
  The same seed, thread count, machine and library versions give the same losses to the last
  digit (data order, masking and initialisation all come from seeded generators;
  `tests/test_bundled_models.py` checks this on a tiny configuration). Another thread count or
  device changes floating-point rounding, so the losses then differ in the later digits.
"""
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
