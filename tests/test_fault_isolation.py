"""One bad request never breaks the engine.

For every class of input that used to hurt the engine, either validation now refuses it with
a ValueError/TypeError naming the parameter, or the request fails alone inside the step
(finish_reason "error", a message, its KV blocks freed) while the requests beside it finish
exactly as they would alone. Either way the engine then serves a new request exactly as a
freshly built engine on the same checkpoint does. Failures inside a step are planted in one
request's path (tests/fault_injection.py) where validation now stops every real trigger.
"""
import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest

from engine import LLM, Engine, MaskPredictParams, RequestError, SamplingParams
from tests.fault_injection import (
    PlantedFailure, alone, assert_kv_accounting, assert_serves_like_fresh, poisoned_decode,
    poisoned_forward, run_to_end,
)
from tests.tiny_causal import VOCAB_SIZE, make_gpt2, make_llama
from tests.tiny_masked import make_masked_lm
from tests.tokenizer_factory import CAUSAL_SPECIALS, make_tokenizer

AR = dict(block_size=4, num_kv_blocks=48)  # prefix caching is on by default
GREEDY = dict(temperature=0.0, ignore_eos=True, max_tokens=8)
GOOD = [[5, 6, 7], [9, 10], [20, 21, 22, 23, 24]]  # prompts served beside a failing one
VICTIM = [30, 31, 32]
PROBE = [40, 41]  # the request a fresh engine is compared on afterwards


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal")
    return {"gpt2": make_gpt2(root), "llama": make_llama(root)}


@pytest.fixture(scope="module")
def gpt2(causal):
    return causal["gpt2"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_masked_lm("bert", str(tmp_path_factory.mktemp("bert") / "bert"))


@pytest.fixture
def engine(gpt2):
    """A GPT-2 engine with one request in flight (see `in_flight`)."""
    return Engine(gpt2, **AR)


def in_flight(engine):
    """Start a greedy request and run one step, so a bad add meets a busy engine."""
    rid = engine.add_request(GOOD[0], SamplingParams(**GREEDY))
    engine.step()
    return rid


def finish_in_flight(engine, path, rid):
    """The request started by `in_flight` ends exactly as it does alone on a fresh engine."""
    out = run_to_end(engine)[rid]
    assert out.token_ids == alone(path, GOOD[0], SamplingParams(**GREEDY), **AR).token_ids
    assert_serves_like_fresh(engine, path, PROBE, SamplingParams(**GREEDY), **AR)


# ---- values validation lets through no more ----------------------------------------------

BAD_FIELDS = [  # (field, value the sampler or the model could not take, error, message)
    ("top_k", 2**63, ValueError, r"top_k must be in \[-1, 9223372036854775807\]"),
    ("top_k", np.uint64(2**64 - 1), ValueError, "top_k must be in"),
    ("seed", np.float64(3.0), TypeError, "seed must be an int"),
    ("seed", "7", TypeError, "seed must be an int"),
    ("temperature", float("nan"), ValueError, "temperature must be finite"),
    ("temperature", np.float32("inf"), ValueError, "temperature must be finite"),
    ("temperature", 1e39, ValueError, "temperature must be <= 3.40282e"),
    ("top_p", 0.0, ValueError, r"top_p must be in \(0, 1\]"),
    ("top_p", np.float16("nan"), ValueError, "top_p must be finite"),
    ("max_tokens", True, TypeError, "max_tokens must be an int"),
    ("max_tokens", np.int64(10**6), ValueError, "exceeds the model's context"),
    ("min_tokens", 9, ValueError, r"min_tokens must be in \[0, 8\]"),
    ("stop_token_ids", [3, VOCAB_SIZE], ValueError, rf"stop_token_ids: token id {VOCAB_SIZE} is outside"),
    ("stop_token_ids", [3, -1], ValueError, "stop_token_ids entry must be >= 0"),
    ("stop_token_ids", np.zeros((2, 2), dtype=int), ValueError, "stop_token_ids must be one-dimensional"),
    ("stop", [""], ValueError, "stop strings must be non-empty"),
    ("stop", [b"x"], TypeError, "stop must be a str or a list of str"),
    ("logprobs", 21, ValueError, r"logprobs must be in \[0, 20\]"),
    ("ignore_eos", 1, TypeError, "ignore_eos must be a bool"),
]


@pytest.mark.parametrize("field, value, error, message", BAD_FIELDS)
def test_a_value_the_engine_cannot_take_is_refused_at_intake(gpt2, engine, field, value, error, message):
    """Set on a valid params object after construction (where no constructor sees it), the
    value is refused by add_request before anything is queued; the request in flight and
    the engine's later requests are served as on a fresh engine."""
    rid = in_flight(engine)
    params = SamplingParams(**GREEDY)
    setattr(params, field, value)
    running = engine.stats()["num_running"] + engine.stats()["num_waiting"]
    with pytest.raises(error, match=message):
        engine.add_request(VICTIM, params)
    assert engine.stats()["num_running"] + engine.stats()["num_waiting"] == running
    finish_in_flight(engine, gpt2, rid)


def test_numpy_numbers_are_taken_as_python_numbers(gpt2, engine):
    """A numpy integer seed (once a sampler crash) draws exactly what the same Python int draws."""
    as_python = SamplingParams(temperature=0.9, top_k=50, top_p=0.9, seed=12345, max_tokens=8)
    as_numpy = SamplingParams(temperature=np.float32(0.9), top_k=np.int16(50), top_p=np.float64(0.9),
                              seed=np.uint64(12345), max_tokens=np.int8(8))
    late = SamplingParams(temperature=0.9, top_k=50, top_p=0.9, max_tokens=8)
    late.seed = np.int32(12345)  # after construction: canonicalised at intake
    want = alone(gpt2, VICTIM, as_python, **AR).token_ids
    rids = [engine.add_request(VICTIM, p) for p in (as_numpy, late)]
    finished = run_to_end(engine)
    assert [finished[r].token_ids for r in rids] == [want, want]
    assert_serves_like_fresh(engine, gpt2, PROBE, SamplingParams(**GREEDY), **AR)


CHANGES_AFTER_INTAKE = {  # name: (change to the caller's params object, KV blocks of 4 tokens)
    "max_tokens beyond the context": (lambda p: setattr(p, "max_tokens", 200), 48),  # failed in a step
    "max_tokens beyond the cache": (lambda p: setattr(p, "max_tokens", 100), 6),  # stalled the engine
    "stop ids appended": (lambda p: p.stop_token_ids.extend(range(VOCAB_SIZE)), 48),
}


@pytest.mark.parametrize("change", CHANGES_AFTER_INTAKE)
def test_params_changed_after_intake_do_not_reach_the_request(gpt2, change):
    """The engine keeps its own copy of a request's params: a caller reusing (and changing)
    one params object for its next request cannot push a queued request past the checks it
    passed."""
    edit, num_kv_blocks = CHANGES_AFTER_INTAKE[change]
    engine = Engine(gpt2, block_size=4, num_kv_blocks=num_kv_blocks)
    params = SamplingParams(**GREEDY)
    rid = engine.add_request(VICTIM, params)
    engine.step()
    edit(params)
    out = run_to_end(engine, max_steps=200)[rid]
    assert out.finish_reason == "length"
    assert out.token_ids == alone(gpt2, VICTIM, SamplingParams(**GREEDY), num_kv_blocks=num_kv_blocks).token_ids
    assert_serves_like_fresh(engine, gpt2, PROBE, SamplingParams(**GREEDY), block_size=4,
                             num_kv_blocks=num_kv_blocks)


@pytest.mark.parametrize("prompt, arrival_time, error, message", [
    ("the \ud800 cat", None, ValueError, "prompt is not valid Unicode text: surrogates not allowed at character 4"),
    (VICTIM, "now", TypeError, "arrival_time must be a number"),
    (VICTIM, float("nan"), ValueError, "arrival_time must be finite"),
])
def test_bad_request_arguments_are_refused_at_intake(gpt2, engine, prompt, arrival_time, error, message):
    rid = in_flight(engine)
    with pytest.raises(error, match=message):
        engine.add_request(prompt, SamplingParams(**GREEDY), arrival_time=arrival_time)
    finish_in_flight(engine, gpt2, rid)


# ---- token ids the tokenizer has and the model lacks -------------------------------------

def test_min_tokens_with_stop_ids_covering_the_vocabulary(gpt2, engine):
    rid = in_flight(engine)
    with pytest.raises(ValueError, match="min_tokens .* cover the whole vocabulary"):
        engine.add_request(VICTIM, SamplingParams(min_tokens=2, stop_token_ids=range(VOCAB_SIZE)))
    finish_in_flight(engine, gpt2, rid)


def _edit_config(path, **fields):
    file = os.path.join(path, "config.json")
    with open(file) as f:
        config = json.load(f)
    config.update(fields)
    with open(file, "w") as f:
        json.dump(config, f)


def test_config_eos_beyond_the_vocabulary_is_dropped(gpt2, tmp_path):
    """An eos id the model cannot produce (once banned by min_tokens beyond the logits) is
    dropped with a warning; min_tokens requests then run as on the intact checkpoint."""
    broken = str(tmp_path / "eos")
    shutil.copytree(gpt2, broken)
    _edit_config(broken, eos_token_id=[VOCAB_SIZE + 3, 2])
    with pytest.warns(UserWarning, match=f"eos token id {VOCAB_SIZE + 3} is outside"):
        engine = Engine(broken, **AR)
    params = SamplingParams(temperature=0.0, min_tokens=6, max_tokens=8)
    rid = engine.add_request(VICTIM, params)
    assert run_to_end(engine)[rid].token_ids == alone(gpt2, VICTIM, params, **AR).token_ids
    assert_serves_like_fresh(engine, gpt2, PROBE, SamplingParams(**GREEDY), **AR)


@pytest.fixture(scope="module")
def big_tokenizer(gpt2, tmp_path_factory):
    """The GPT-2 checkpoint with a tokenizer 32 ids larger than its embedding."""
    path = str(tmp_path_factory.mktemp("mismatch") / "gpt2")
    shutil.copytree(gpt2, path)
    make_tokenizer(CAUSAL_SPECIALS, VOCAB_SIZE + 32).save_pretrained(path)
    return path


def test_str_prompt_with_ids_beyond_the_embedding(big_tokenizer):
    engine = Engine(big_tokenizer, **AR)
    rid = in_flight(engine)
    beyond = engine.tokenizer.convert_ids_to_tokens(VOCAB_SIZE + 2)
    with pytest.raises(ValueError, match=rf"token ids \[{VOCAB_SIZE + 2}\] outside the model's vocabulary"):
        engine.add_request(f"the cat {beyond}", SamplingParams(**GREEDY))
    finish_in_flight(engine, big_tokenizer, rid)
    assert_serves_like_fresh(engine, big_tokenizer, "the cat", SamplingParams(**GREEDY), **AR)


# ---- settings the backends could treat differently ---------------------------------------

def test_a_nucleus_that_underflows_keeps_the_top_token(gpt2, engine):
    """A top_p below float32's range (once an empty nucleus, drawing the padding token) keeps
    the most probable token: the greedy output, beside a greedy request in the same batch."""
    tiny = SamplingParams(temperature=1.0, top_p=1e-300, seed=1, ignore_eos=True, max_tokens=8)
    rids = [engine.add_request(prompt, p) for prompt, p in ((GOOD[0], SamplingParams(**GREEDY)), (VICTIM, tiny))]
    finished = run_to_end(engine)
    assert [finished[r].token_ids for r in rids] == [o.token_ids for o in _greedy_alone(gpt2, [GOOD[0], VICTIM])]
    assert_serves_like_fresh(engine, gpt2, PROBE, SamplingParams(**GREEDY), **AR)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_mask_predict_nucleus_that_underflows_never_emits_a_special_token(bert, backend):
    """Both backends keep the most probable allowed token: the greedy result, no [PAD]."""
    mlm = LLM(bert, kernel_backend=backend)
    greedy = MaskPredictParams(length=4, iterations=2)
    tiny = MaskPredictParams(length=4, iterations=2, temperature=1.0, top_p=1e-300, seed=5)
    out = mlm.generate(["the cat", "the cat"], [tiny, greedy])
    assert out[0].token_ids == out[1].token_ids
    assert not set(out[0].token_ids) & set(mlm.tokenizer.all_special_ids)


# ---- options that would be silently ignored, damaged checkpoints ---------------------------

def test_stop_strings_without_a_tokenizer(gpt2, tmp_path):
    path = str(tmp_path / "no-tokenizer")
    shutil.copytree(gpt2, path, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens_map.json"))
    engine = Engine(path, **AR)
    rid = in_flight(engine)
    with pytest.raises(ValueError, match="stop strings need the checkpoint's tokenizer"):
        engine.add_request(VICTIM, SamplingParams(stop=["cat"]))
    finish_in_flight(engine, path, rid)


def test_a_damaged_checkpoint_is_named_and_the_running_engine_goes_on(gpt2, engine, tmp_path):
    rid = in_flight(engine)
    broken = str(tmp_path / "broken")
    shutil.copytree(gpt2, broken)
    with open(os.path.join(broken, "model.safetensors"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match=f"{broken}.*model.safetensors"):
        LLM(broken)
    finish_in_flight(engine, gpt2, rid)


# ---- failures inside a step: autoregressive ---------------------------------------------

def _greedy_alone(path, prompts, params=None):
    params = SamplingParams(**GREEDY) if params is None else params
    return [alone(path, p, params, **AR) for p in prompts]


def _poison_only_in(victim_tokens, others, skip=0):
    """A token id of the victim's (after its first `skip`) that no other token list holds."""
    taken = {t for tokens in others for t in tokens}
    return next(t for t in victim_tokens[skip:] if t not in taken)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("where", ["prompt", "decode"])
def test_a_request_failing_in_the_forward_fails_alone(causal, family, where):
    """The victim's token makes the forward raise, in its prompt (the first step) or in what it
    generated (mid-decode, after its blocks were filled and sealed); the good requests finish
    with their tokens alone, the victim with "error" and the message, its blocks freed at once."""
    path = causal[family]
    good = _greedy_alone(path, GOOD)
    good_tokens = [o.token_ids for o in good] + GOOD
    if where == "prompt":
        poison = _poison_only_in(VICTIM, good_tokens)
    else:
        poison = _poison_only_in(_greedy_alone(path, [VICTIM])[0].token_ids, good_tokens + [VICTIM], skip=2)
    engine = Engine(path, **AR)
    with poisoned_forward(engine.loaded.model, poison):
        rids = [engine.add_request(p, SamplingParams(**GREEDY)) for p in GOOD[:2]]
        victim = engine.add_request(VICTIM, SamplingParams(**GREEDY))
        finished = {out.request_id: out for out in engine.step() if out.finished}
        rids.append(engine.add_request(GOOD[2], SamplingParams(**GREEDY)))  # joins mid-flight
        while engine.has_unfinished():
            for out in engine.step():
                if out.finished:
                    finished[out.request_id] = out
            assert_kv_accounting(engine)  # the victim holds no block from the step it failed in
    assert [finished[r].token_ids for r in rids] == [o.token_ids for o in good]
    assert all(finished[r].error is None for r in rids)
    failed = finished[victim]
    assert failed.finish_reason == "error" and "PlantedFailure" in failed.error and f"token {poison}" in failed.error
    assert_serves_like_fresh(engine, path, PROBE, SamplingParams(**GREEDY), **AR)


def test_a_request_whose_text_cannot_be_decoded_fails_alone(gpt2):
    """With stop strings a request is detokenized every step; a tokenizer that raises on one
    of the victim's tokens fails the victim only, and the other requests, with stop strings
    or without, finish as they do alone."""
    params = [SamplingParams(stop=["never seen"], **GREEDY), SamplingParams(**GREEDY),
              SamplingParams(stop=["w99 w98"], **GREEDY)]
    good = [alone(gpt2, p, sp, **AR) for p, sp in zip(GOOD, params)]
    victim_params = SamplingParams(stop=["never seen"], **GREEDY)
    victim_tokens = alone(gpt2, VICTIM, victim_params, **AR).token_ids
    poison = _poison_only_in(victim_tokens, [o.token_ids for o in good], skip=3)
    engine = Engine(gpt2, **AR)
    with poisoned_decode(engine.tokenizer, poison):
        rids = [engine.add_request(p, sp) for p, sp in zip(GOOD, params)]
        victim = engine.add_request(VICTIM, victim_params)
        finished = run_to_end(engine)
        assert [(finished[r].token_ids, finished[r].text) for r in rids] == [(o.token_ids, o.text) for o in good]
    failed = finished[victim]
    assert failed.finish_reason == "error" and "cannot decode token" in failed.error
    assert failed.token_ids == victim_tokens[: victim_tokens.index(poison) + 1]
    assert_serves_like_fresh(engine, gpt2, PROBE, SamplingParams(**GREEDY), **AR)


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_error_nobody_can_be_blamed_for_fails_the_requests_in_flight(gpt2, monkeypatch, when):
    """The scheduler raises, before touching anything or after it gave a request its blocks:
    every request in flight finishes with "error", no block stays taken, and the engine
    serves the next request as a fresh one does."""
    engine = Engine(gpt2, **AR)
    rids = [engine.add_request(p, SamplingParams(**GREEDY)) for p in GOOD[:2]]
    engine.step()
    engine.step()
    rids.append(engine.add_request(GOOD[2], SamplingParams(**GREEDY)))  # waiting when it breaks
    block_manager = engine.executor.block_manager
    allocate = block_manager.allocate

    def broken(*args):
        if when == "after":
            allocate(*args)
        raise PlantedFailure("planted: the scheduler broke")

    with monkeypatch.context() as patch:
        patch.setattr(block_manager, "allocate", broken)
        outputs = engine.step()
    assert sorted(o.request_id for o in outputs) == sorted(rids)
    assert all(o.finished and o.finish_reason == "error" and "scheduler broke" in o.error for o in outputs)
    assert_serves_like_fresh(engine, gpt2, PROBE, SamplingParams(**GREEDY), **AR)


def test_generate_raises_request_error_after_the_others_complete(gpt2):
    good = _greedy_alone(gpt2, GOOD)
    llm = LLM(gpt2, **AR)
    with poisoned_forward(llm.engine.loaded.model, _poison_only_in(VICTIM, GOOD)):
        with pytest.raises(RequestError, match=r"request \S+ \(prompt 1\) failed: PlantedFailure") as info:
            llm.generate([GOOD[0], VICTIM, GOOD[1], GOOD[2]], SamplingParams(**GREEDY))
    outs = info.value.outputs
    assert [o.finish_reason for o in outs] == ["length", "error", "length", "length"]
    assert [outs[i].token_ids for i in (0, 2, 3)] == [o.token_ids for o in good]
    assert_serves_like_fresh(llm.engine, gpt2, PROBE, SamplingParams(**GREEDY), **AR)


# ---- failures inside a step: mask-predict ------------------------------------------------

MP = MaskPredictParams(length=6, iterations=4)
MP_VICTIM = [12, 80, 33]  # the tiny BERT's first pass keeps a token (52) no other request here makes


def _mp_setup(bert, where):
    """(good outputs alone, poison): the poison is in the victim's prompt or among the tokens
    its first pass keeps, which its later passes feed back to the encoder."""
    good = [alone(bert, p, MP) for p in GOOD]
    taken = [o.token_ids for o in good] + GOOD
    if where == "prompt":
        return good, _poison_only_in(MP_VICTIM, taken)
    engine = Engine(bert)
    engine.add_request(MP_VICTIM, MP)
    first_pass = engine.step()[0].token_ids
    kept = [t for t in first_pass if t != engine.tokenizer.mask_token_id]
    return good, _poison_only_in(kept, taken + [MP_VICTIM])


@pytest.mark.parametrize("where", ["prompt", "pass"])
def test_mask_predict_request_failing_in_the_encoder_fails_alone(bert, where):
    good, poison = _mp_setup(bert, where)
    engine = Engine(bert)
    with poisoned_forward(engine.loaded.model, poison):
        rids = [engine.add_request(p, MP) for p in GOOD[:2]]
        victim = engine.add_request(MP_VICTIM, MP)
        finished = {out.request_id: out for out in engine.step() if out.finished}
        rids.append(engine.add_request(GOOD[2], MP))
        finished.update(run_to_end(engine))
    assert [(finished[r].token_ids, finished[r].metrics.nfe) for r in rids] == [(o.token_ids, 4) for o in good]
    assert finished[victim].finish_reason == "error" and f"token {poison}" in finished[victim].error
    assert_serves_like_fresh(engine, bert, PROBE, MP)


def test_mask_predict_generate_raises_request_error(bert):
    good, poison = _mp_setup(bert, "prompt")
    llm = LLM(bert)
    with poisoned_forward(llm.engine.loaded.model, poison):
        with pytest.raises(RequestError, match=r"\(prompt 2\) failed: PlantedFailure") as info:
            llm.generate([GOOD[0], GOOD[1], MP_VICTIM], MP)
    assert [o.token_ids for o in info.value.outputs[:2]] == [o.token_ids for o in good[:2]]
    assert_serves_like_fresh(llm.engine, bert, PROBE, MP)


def test_mask_predict_error_nobody_can_be_blamed_for(bert, monkeypatch):
    engine = Engine(bert)
    rids = [engine.add_request(p, MP) for p in GOOD]
    engine.step()

    def broken():
        raise PlantedFailure("planted: broke")

    with monkeypatch.context() as patch:
        patch.setattr(engine.executor, "step", broken)
        outputs = engine.step()
    assert sorted(o.request_id for o in outputs) == sorted(rids)
    assert all(o.finish_reason == "error" and "broke" in o.error for o in outputs)
    assert_serves_like_fresh(engine, bert, PROBE, MP)


def _mp_with_undecodable_victim(bert):
    """(good outputs alone, every output of the good requests in the run, the engine, the
    victim's last output): a tokenizer cannot decode a token the victim's first pass keeps.
    Text is decoded inside a pass for the requests that keep their pass texts: the victim and
    two of the others, whose texts are decoded in the same call."""
    texts = replace(MP, return_pass_texts=True)
    params = [texts, MP, texts]
    good = [alone(bert, p, sp) for p, sp in zip(GOOD, params)]
    _, poison = _mp_setup(bert, "pass")
    engine = Engine(bert)
    with poisoned_decode(engine.tokenizer, poison):
        rids = [engine.add_request(p, sp) for p, sp in zip(GOOD, params)]
        victim = engine.add_request(MP_VICTIM, texts)
        streams = {}
        while engine.has_unfinished():
            for out in engine.step():
                streams.setdefault(out.request_id, []).append(out)
    return good, [streams[r] for r in rids], engine, streams[victim][-1]


def test_mask_predict_request_whose_text_cannot_be_decoded_fails_alone(bert):
    good, streams, engine, failed = _mp_with_undecodable_victim(bert)
    assert [s[-1].token_ids for s in streams] == [o.token_ids for o in good]
    assert [s[-1].metrics.pass_texts for s in streams] == [o.metrics.pass_texts for o in good]
    assert all(s[-1].finish_reason == "length" and s[-1].metrics.nfe == MP.iterations for s in streams)
    assert failed.finish_reason == "error" and "cannot decode" in failed.error
    assert_serves_like_fresh(engine, bert, PROBE, MP)


def test_mask_predict_undecodable_victim_costs_the_others_no_pass_output(bert):
    """A streaming caller sees every pass of the other requests: one output per pass."""
    _, streams, _, _ = _mp_with_undecodable_victim(bert)
    assert [len(s) for s in streams] == [MP.iterations] * len(streams)
