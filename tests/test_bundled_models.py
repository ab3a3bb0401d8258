"""The bundled tokenizer and checkpoints (benchmarks/assets), and train.py's reproducibility."""
import json
import math
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertForMaskedLM, GPT2LMHeadModel

from benchmarks import train
from benchmarks.language import ReferenceLanguage

ASSETS = Path(train.__file__).parent / "assets"
HELDOUT_SEED = 424242  # neither the training corpus (seed 0) nor train.py's held-out set


@pytest.fixture(scope="module")
def lang():
    return ReferenceLanguage()


@pytest.fixture(scope="module")
def ar():
    folder = ASSETS / "ar-gpt2"
    return GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(folder)


def test_tokenizer_round_trips_and_has_every_special(lang):
    tok = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    assert set(lang.words) <= set(tok.get_vocab())
    for name in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token", "bos_token", "eos_token"):
        assert getattr(tok, name) is not None, name
    for text in lang.sample(200, seed=HELDOUT_SEED):
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text
    for folder in ("ar-gpt2", "mlm-bert", "cmlm-bert"):
        assert AutoTokenizer.from_pretrained(ASSETS / folder).get_vocab() == tok.get_vocab()
    assert AutoTokenizer.from_pretrained(ASSETS / "ar-gpt2")("the cat").input_ids[0] == tok.bos_token_id
    bert = AutoTokenizer.from_pretrained(ASSETS / "cmlm-bert")("the cat").input_ids
    assert (bert[0], bert[-1]) == (tok.cls_token_id, tok.sep_token_id)


def test_checkpoints_are_matched_small_fp16():
    models = {
        "ar-gpt2": GPT2LMHeadModel.from_pretrained(ASSETS / "ar-gpt2"),
        "mlm-bert": BertForMaskedLM.from_pretrained(ASSETS / "mlm-bert"),
        "cmlm-bert": BertForMaskedLM.from_pretrained(ASSETS / "cmlm-bert"),
    }
    counts = {name: train.num_params(m) for name, m in models.items()}
    assert max(counts.values()) <= 1.05 * min(counts.values()), counts
    assert len({m.config.max_position_embeddings for m in models.values()}) == 1
    assert models["cmlm-bert"].config.cmlm_answer_slots > 0
    for name in models:
        weights = ASSETS / name / "model.safetensors"
        assert weights.stat().st_size < 8 * 2**20
        assert (ASSETS / name / "README.md").read_text().count(f"{counts[name]:,} parameters") == 1
        log = json.loads((ASSETS / name / "train_log.json").read_text())
        assert log["params"] == counts[name]
    header = json.loads(_safetensors_header(ASSETS / "ar-gpt2" / "model.safetensors"))
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F16"}


def _safetensors_header(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return raw[8:8 + n]


def test_greedy_continuations_are_valid(lang, ar):
    """HF greedy decoding from held-out prompts (prefixes of sampled sentences) ends sentences validly."""
    model, tok = ar
    rng = random.Random(0)
    groups = defaultdict(list)  # prompts of equal length batch without padding
    for s in lang.sample(200, seed=HELDOUT_SEED):
        words = s.split()
        k = rng.randrange(len(words))
        groups[k].append(" ".join(words[:k]))
    valid = total = 0
    for k, prompts in groups.items():
        ids = torch.tensor([tok(p).input_ids for p in prompts])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=model.config.n_positions - ids.shape[1],
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        for prompt, row in zip(prompts, out[:, ids.shape[1]:].tolist()):
            total += 1
            if tok.eos_token_id in row:
                text = tok.decode(row[:row.index(tok.eos_token_id)])
                valid += lang.is_valid(f"{prompt} {text}")
    print(f"\ngreedy continuations valid: {valid}/{total}")
    assert valid >= 0.95 * total


@torch.no_grad()
def test_heldout_loss_is_near_the_entropy_rate(lang, ar):
    """Model NLL minus the grammar's exact NLL of the same sentences estimates the per-token KL."""
    model, tok = ar
    sentences = lang.sample(1000, seed=HELDOUT_SEED + 1)
    nll = tokens = 0.0
    for i in range(0, len(sentences), 250):
        batch = tok([s + " " + tok.eos_token for s in sentences[i:i + 250]], padding=True, return_tensors="pt")
        logits = model(**batch).logits[:, :-1]
        labels = batch.input_ids[:, 1:].masked_fill(batch.attention_mask[:, 1:] == 0, -100)
        nll += torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum").item()
        tokens += int((labels != -100).sum())
    loss = nll / tokens
    floor = -lang.log_probs(sentences).sum() / sum(len(s.split()) + 1 for s in sentences)
    entropy = lang.entropy_rate()
    print(f"\nheld-out loss {loss:.4f} nats/token; grammar NLL of the same sentences {floor:.4f}; "
          f"entropy rate {entropy:.4f}")
    assert 0 < loss - floor < train.AR_LOSS_MARGIN
    assert abs(floor - entropy) < 0.1  # the sample is typical


TINY = ["--no-save", "--steps", "3", "--eval-every", "3", "--corpus-size", "300", "--eval-size", "64",
        "--batch-size", "8", "--hidden", "32", "--layers", "1", "--heads", "2", "--device", "cpu"]


def test_training_is_reproducible():
    first = train.main(TINY)
    again = train.main(TINY)
    other = train.main(TINY + ["--seed", "1", "--models", "ar"])
    for kind in train.MODELS:
        assert first["models"][kind]["train_loss"] == again["models"][kind]["train_loss"]
        assert first["models"][kind]["eval"] == again["models"][kind]["eval"]
        assert all(math.isfinite(x) for x in first["models"][kind]["train_loss"])
    assert other["models"]["ar"]["train_loss"] != first["models"]["ar"]["train_loss"]


def test_train_help_runs():
    out = subprocess.run([sys.executable, "-m", "benchmarks.train", "--help"], capture_output=True, text=True,
                         cwd=Path(train.__file__).parent.parent, timeout=120)
    assert out.returncode == 0 and "--corpus-size" in out.stdout
