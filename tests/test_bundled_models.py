"""The bundled tokenizer and checkpoints (benchmarks/assets): the sweep's converged small points."""
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from benchmarks import decoding, likelihood
from benchmarks.decode_configs import DecodeConfig
from benchmarks.evaluate import eval_pairs
from benchmarks.frame import LENGTH_TOKENS, answer_slots
from benchmarks.language import ReferenceLanguage
from benchmarks.objectives import MODELS, SpecialIds
from benchmarks.transformer import load_checkpoint

ASSETS = Path(__file__).resolve().parents[1] / "benchmarks" / "assets"
HELDOUT_SEED = 424242  # neither the training streams nor the sweep's held-out pairs
# The causal next-token model's NLL may exceed the grammar's exact floor of the same held-out
# answers by at most this (nats/token); the sweep's converged point is well inside it.
AR_GAP_MARGIN = 0.05


@pytest.fixture(scope="module")
def lang():
    return ReferenceLanguage()


@pytest.fixture(scope="module")
def pairs(lang):
    return eval_pairs(lang, 300, 64)


def test_tokenizer_round_trips_and_is_shared(lang):
    tok = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    vocab = tok.get_vocab()
    assert set(lang.words) <= set(vocab) and set(LENGTH_TOKENS) <= set(vocab)
    for text in lang.sample(200, seed=HELDOUT_SEED):
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids and tok.decode(ids) == text
    for name in MODELS:
        assert AutoTokenizer.from_pretrained(ASSETS / name).get_vocab() == vocab
    assert AutoTokenizer.from_pretrained(ASSETS / "ar-gpt2")("the cat").input_ids[0] == tok.bos_token_id
    bert = AutoTokenizer.from_pretrained(ASSETS / "cmlm-bert")("the cat").input_ids
    assert (bert[0], bert[-1]) == (tok.cls_token_id, tok.sep_token_id)


def test_checkpoints_are_the_experiment_models_small_and_fp16():
    counts = {}
    for name, spec in MODELS.items():
        config = json.loads((ASSETS / name / "config.json").read_text())
        assert config["experiment_model"] == name
        assert config["architectures"] == ["LlamaForCausalLM" if spec.causal else "EuroBertForMaskedLM"]
        weights = ASSETS / name / "model.safetensors"
        assert weights.stat().st_size < 2 * 2**20
        raw = weights.read_bytes()
        header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
        assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F16"}
        log = json.loads((ASSETS / name / "train_log.json").read_text())
        counts[name] = log["params"]
        assert f"{log['params']:,} parameters" in (ASSETS / name / "README.md").read_text()
    assert len(set(counts.values())) == 1  # one transformer for all five


def test_causal_model_is_near_the_floor_and_writes_valid_text(lang, pairs):
    model, _ = load_checkpoint(ASSETS / "ar-gpt2")
    ids = SpecialIds.of(model.vocab_size)
    nll = likelihood.causal_nll(model, pairs, ids).sum() / likelihood.answer_tokens(pairs).sum()
    floor = likelihood.conditional_floor(lang, MODELS["ar-gpt2"], pairs, 64).sum() / likelihood.answer_tokens(pairs).sum()
    print(f"\nar-gpt2 held-out NLL {nll:.4f}, floor {floor:.4f}")
    assert 0 < nll - floor < AR_GAP_MARGIN
    outs = decoding.generate_causal(model, [p for p, _ in pairs], ids)
    tok = AutoTokenizer.from_pretrained(ASSETS / "ar-gpt2")
    text = lambda t: " ".join(tok.convert_ids_to_tokens(t))  # noqa: E731
    valid = lang.log_probs([text(o.words) for o in outs], [text(p) for p, _ in pairs])
    assert (valid > float("-inf")).mean() >= 0.95


def test_length_heads_predict_the_frame(pairs):
    """Each bidirectional model's length head names the held-out answer's frame size more often
    than the most common size alone would."""
    sizes = [answer_slots(len(a)) for _, a in pairs]
    baseline = max(sizes.count(s) for s in set(sizes)) / len(sizes)
    for name, spec in MODELS.items():
        if not spec.length_head:
            continue
        model, _ = load_checkpoint(ASSETS / name)
        tok = AutoTokenizer.from_pretrained(ASSETS / name)
        frames = decoding.predict_frames(model, [p for p, _ in pairs], SpecialIds.of(model.vocab_size),
                                         tok.all_special_ids)
        hits = sum(f == s for f, s in zip(frames, sizes)) / len(sizes)
        print(f"\n{name}: length head right {hits:.0%} (most common size {baseline:.0%})")
        assert hits > baseline


def test_left_to_right_decoding_may_stop_at_eos(pairs):
    """The sweep stops a left-to-right decode at its <eos> (text_only): same words, same passes."""
    model, _ = load_checkpoint(ASSETS / "cmlm-bert")
    tok = AutoTokenizer.from_pretrained(ASSETS / "cmlm-bert")
    ids, prompts = SpecialIds.of(model.vocab_size), [p for p, _ in pairs[:60]]
    config = DecodeConfig("L2R", "l2r")
    frames = decoding.predict_frames(model, prompts, ids, tok.all_special_ids)
    params = [config.mp_params(n) for n in frames]
    full = decoding.mask_predict(model, prompts, frames, params, ids, tok.all_special_ids)
    short = decoding.mask_predict(model, prompts, frames, params, ids, tok.all_special_ids, text_only=True)
    assert [o.words for o in short] == [o.words for o in full]
    assert [o.passes for o in short] == [o.passes for o in full]
    assert sum(len(o.words) + 1 < o.frame for o in full) > 10  # many end before their frame's last slot


@torch.no_grad()
def test_assets_equal_their_sweep_points():
    """The bundled checkpoints are the sweep's converged points: same config and held-out loss."""
    from benchmarks import sweep_plan

    for name in MODELS:
        point = sweep_plan.Point("converged", name, "small", sweep_plan.CONVERGED_STEPS, None)
        result = json.loads((ASSETS.parent / "results" / "sweep" / "points" / f"{point.key}.json").read_text())
        log = json.loads((ASSETS / name / "train_log.json").read_text())
        assert log["config"] == result["train"]["config"] and log["heldout_loss"] == result["train"]["heldout_loss"]
