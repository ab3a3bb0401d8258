"""Mask-predict on the engine equals the HF oracle; batching, variants and bad input."""
import gc

import pytest
import torch
from transformers import AutoModelForMaskedLM

from engine.backend import get_ops
from engine.config import EngineConfig
from engine.mask_predict import MaskPredictExecutor, _Request
from engine.models.loader import load_model
from engine.params import MaskPredictParams, SamplingParams
from tests.hf_mask_predict import hf_mask_predict
from tests.test_bert_models import ENCODER_KERNELS, require_backend
from tests.tiny_masked import FAMILIES, make_masked_lm

MP_KERNELS = ENCODER_KERNELS + ("confidence", "sampling")


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory):
    path = make_masked_lm(request.param, tmp_path_factory.mktemp(request.param))
    hf = AutoModelForMaskedLM.from_pretrained(path, dtype=torch.float32).eval()
    loaded = load_model(path, dtype="float32", device="cpu", kernel_backend="torch")
    return request.param, path, hf, loaded


def executor(checkpoint, backend="torch", **config):
    _, path, _, loaded = checkpoint
    if backend != "torch":
        loaded = load_model(path, dtype="float32", device="cpu", kernel_backend=backend)
    config = EngineConfig(model=path, device="cpu", kernel_backend=backend, **config)
    return MaskPredictExecutor(loaded, config, get_ops(backend))


def add(ex, request_id, ids, params, arrival_time=0.0):
    """What Engine.add_request does after its own checks: the executor's fit check, then add
    (seed 0 for requests that bring none)."""
    ex.check_request(ids, params)
    ex.add(request_id, None, ids, params, 0 if params.seed is None else params.seed, arrival_time)


def run(ex, requests):
    """Add (id, prompt_ids, params) requests, step to the end; final outputs by id."""
    for request_id, ids, params in requests:
        add(ex, request_id, ids, params)
    return drain(ex)


def drain(ex, done=None):
    done = {} if done is None else done
    while ex.has_unfinished():
        for out in ex.step():
            if out.finished:
                done[out.request_id] = out
    return done


def assert_matches_oracle(checkpoint, out, ids, params):
    _, _, hf, loaded = checkpoint
    want, _ = hf_mask_predict(hf, loaded.tokenizer, ids, params)
    assert out.token_ids == want.token_ids
    assert out.text == want.text
    assert out.metrics.nfe == want.nfe
    assert out.metrics.tokens_per_pass == want.tokens_per_pass
    assert out.finished and out.finish_reason == "length"
    return want


PROMPTS = [[10, 11, 12], [40], [20, 21, 22, 23, 24, 25, 26], [60, 61], [30, 31, 32, 33]]
# one request per remask mode, schedule and decoding rule; different lengths, iterations, prompts
MIXED = [
    MaskPredictParams(length=6, iterations=3),
    MaskPredictParams(length=8, iterations=4, remask="commit"),
    MaskPredictParams(length=5, iterations=4, remask="random", seed=7),
    MaskPredictParams(length=7, iterations=4, schedule="cosine", return_pass_texts=True),
    MaskPredictParams(length=4, iterations=2, temperature=0.8, top_k=40, top_p=0.9, seed=5),
]
# the same rules in two passes: Triton's interpreter spends seconds per attention launch
SHORT = [
    MaskPredictParams(length=6, iterations=2),
    MaskPredictParams(length=5, iterations=2, remask="commit"),
    MaskPredictParams(length=5, iterations=2, remask="random", seed=7),
    MaskPredictParams(length=4, iterations=2, schedule="cosine", return_pass_texts=True),
    MaskPredictParams(length=3, iterations=2, temperature=0.8, top_k=40, top_p=0.9, seed=5),
]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_mixed_batch_matches_oracle(checkpoint, backend):
    require_backend(backend, MP_KERNELS)
    ex = executor(checkpoint, backend)
    requests = list(zip(PROMPTS, MIXED if backend == "torch" else SHORT))
    done = run(ex, [(str(i), ids, p) for i, (ids, p) in enumerate(requests)])
    for i, (ids, params) in enumerate(requests):
        want = assert_matches_oracle(checkpoint, done[str(i)], ids, params)
        assert sum(want.tokens_per_pass) == params.length
        assert done[str(i)].metrics.pass_texts == (want.pass_texts if params.return_pass_texts else None)


@pytest.mark.parametrize("length, iterations", [(1, 1), (4, 1), (5, 2), (9, 3), (3, 6)])
def test_length_iteration_pairs_match_oracle(checkpoint, length, iterations):
    params = MaskPredictParams(length=length, iterations=iterations)
    out = run(executor(checkpoint), [("a", PROMPTS[0], params)])["a"]
    assert_matches_oracle(checkpoint, out, PROMPTS[0], params)
    assert out.metrics.nfe == iterations and len(out.token_ids) == length


def test_no_special_tokens_except_eos(checkpoint):
    _, _, _, loaded = checkpoint
    tok = loaded.tokenizer
    out = run(executor(checkpoint), [("a", [5], MaskPredictParams(length=12, iterations=4))])["a"]
    forbidden = set(tok.all_special_ids) - {tok.eos_token_id}
    assert not forbidden & set(out.token_ids)


def test_sampling_matches_oracle_and_is_seeded(checkpoint):
    params = MaskPredictParams(length=6, iterations=3, temperature=0.9, top_k=30, top_p=0.95, seed=11)
    ex = executor(checkpoint)
    done = run(ex, [("a", PROMPTS[1], params), ("b", PROMPTS[1], params)])
    assert_matches_oracle(checkpoint, done["a"], PROMPTS[1], params)
    assert done["a"].token_ids == done["b"].token_ids
    other = run(ex, [("c", PROMPTS[1], MaskPredictParams(**{**vars(params), "seed": 12}))])["c"]
    greedy = run(ex, [("d", PROMPTS[1], MaskPredictParams(length=6, iterations=3))])["d"]
    assert done["a"].token_ids != other.token_ids or done["a"].token_ids != greedy.token_ids


def test_random_remask_invariants(checkpoint):
    params = MaskPredictParams(length=10, iterations=5, remask="random", seed=3, return_pass_texts=True)
    ex = executor(checkpoint)
    done = run(ex, [("a", PROMPTS[0], params), ("b", PROMPTS[0], MaskPredictParams(**{**vars(params), "seed": 4}))])
    mask = checkpoint[3].tokenizer.mask_token
    for out in done.values():
        # after pass t, n(t) = floor(10 * (4 - t) / 5) slots are masked, whichever they are
        assert [text.split().count(mask) for text in out.metrics.pass_texts] == [8, 6, 4, 2, 0]
        assert len(out.token_ids) == 10 and sum(out.metrics.tokens_per_pass) == 10


def test_threshold_fills_everything_in_fewer_passes(checkpoint):
    params = MaskPredictParams(length=12, iterations=12, threshold=0.05)
    out = run(executor(checkpoint), [("a", PROMPTS[2], params)])["a"]
    assert_matches_oracle(checkpoint, out, PROMPTS[2], params)
    assert out.metrics.nfe < 12
    assert checkpoint[3].tokenizer.mask_token_id not in out.token_ids
    assert all(n >= 1 for n in out.metrics.tokens_per_pass)


def test_threshold_one_fills_one_slot_per_pass(checkpoint):
    params = MaskPredictParams(length=5, iterations=1, threshold=1.0)
    out = run(executor(checkpoint), [("a", PROMPTS[1], params)])["a"]
    assert_matches_oracle(checkpoint, out, PROMPTS[1], params)
    assert out.metrics.tokens_per_pass == [1] * 5


def test_blocks_fill_left_to_right(checkpoint):
    params = MaskPredictParams(length=9, iterations=7, block_length=4, return_pass_texts=True)
    out = run(executor(checkpoint), [("a", PROMPTS[0], params)])["a"]
    assert_matches_oracle(checkpoint, out, PROMPTS[0], params)
    # blocks of 4, 4, 1 slots get 3, 2, 2 passes
    mask = checkpoint[3].tokenizer.mask_token
    patterns = [[w == mask for w in text.split()] for text in out.metrics.pass_texts]
    assert out.metrics.nfe == 7
    for t, pattern in enumerate(patterns):
        block = 0 if t < 3 else 1 if t < 5 else 2
        assert all(pattern[(block + 1) * 4 :]), "later blocks stay masked"
    assert not any(patterns[2][:4]) and not any(patterns[4][:8]) and not any(patterns[6])
    assert out.metrics.tokens_per_pass[:3] == [2, 1, 1]  # n = 2, 1, 0 of 4 stay masked (linear, T=3)


@pytest.mark.parametrize("remask", ["commit", "low_confidence"])
def test_blocks_with_threshold_and_commit(checkpoint, remask):
    params = MaskPredictParams(length=8, iterations=4, block_length=3, remask=remask, schedule="cosine")
    out = run(executor(checkpoint), [("a", PROMPTS[3], params)])["a"]
    assert_matches_oracle(checkpoint, out, PROMPTS[3], params)
    params = MaskPredictParams(length=8, iterations=1, block_length=3, threshold=0.1)
    out = run(executor(checkpoint), [("b", PROMPTS[3], params)])["b"]
    assert_matches_oracle(checkpoint, out, PROMPTS[3], params)


def test_length_candidates_return_best_score(checkpoint):
    params = MaskPredictParams(length_candidates=[3, 6, 9, 4], iterations=3)
    out = run(executor(checkpoint), [("a", PROMPTS[0], params)])["a"]
    want, candidates = hf_mask_predict(checkpoint[2], checkpoint[3].tokenizer, PROMPTS[0], params)
    scores = [c.score for c in candidates]
    assert len(set(scores)) == len(scores)
    assert len(out.token_ids) == params.length_candidates[scores.index(max(scores))]
    assert out.token_ids == want.token_ids and out.text == want.text


@pytest.mark.parametrize("remask", ["low_confidence", "commit"])
def test_stop_early(checkpoint, remask):
    params = MaskPredictParams(length=4, iterations=12, remask=remask, stop_early=True)
    out = run(executor(checkpoint), [("a", PROMPTS[1], params)])["a"]
    assert_matches_oracle(checkpoint, out, PROMPTS[1], params)
    if remask == "commit":
        # pass 1 fills nothing (n stays 3), so pass 2 sees pass 1's input and converges
        assert out.metrics.tokens_per_pass == [1, 0, 3]


def test_mixed_batch_equals_each_alone_and_joining_mid_flight(checkpoint):
    requests = [(str(i), ids, p) for i, (ids, p) in enumerate(zip(PROMPTS, MIXED))]
    requests.append(("5", PROMPTS[2], MaskPredictParams(length=6, iterations=5, block_length=2, threshold=0.2)))
    alone = {rid: run(executor(checkpoint), [(rid, ids, p)])[rid].token_ids for rid, ids, p in requests}
    ex = executor(checkpoint)
    for rid, ids, p in requests[:2]:
        add(ex, rid, ids, p)
    done, ran = {}, []
    for step in range(len(requests) - 2):
        outs = ex.step()
        ran.append({o.request_id for o in outs})
        done.update({o.request_id: o for o in outs if o.finished})
        add(ex, *requests[2 + step])
    assert ran[0] == {"0", "1"} and ran[1] == {"0", "1", "2"}  # joined at the next pass
    drain(ex, done)
    assert {rid: out.token_ids for rid, out in done.items()} == alone


def test_budgets_bound_each_pass(checkpoint):
    params = MaskPredictParams(length=6, iterations=2)
    ex = executor(checkpoint, max_num_seqs=2, max_num_batched_tokens=40)
    for i in range(5):
        add(ex, str(i), PROMPTS[i % 2], params)
    order = []
    while ex.has_unfinished():
        outs = ex.step()
        assert 1 <= len(outs) <= 2
        order += [o.request_id for o in outs if o.finished]
    assert order == ["0", "1", "2", "3", "4"]  # first come, first served


def test_outputs_show_progress(checkpoint):
    params = MaskPredictParams(length=6, iterations=3)
    ex = executor(checkpoint)
    add(ex, "a", PROMPTS[0], params, arrival_time=0.0)
    mask = checkpoint[3].tokenizer.mask_token_id
    first = ex.step()[0]
    assert not first.finished and first.finish_reason is None
    assert first.token_ids.count(mask) == 4  # floor(6 * 2 / 3) re-masked
    assert first.metrics.ttft is not None and first.metrics.nfe == 1
    last = drain(ex)["a"]
    assert last.metrics.prompt_tokens == 3 and last.metrics.generated_tokens == 6
    assert last.metrics.e2e >= last.metrics.ttft


def test_final_only_requests_output_their_last_pass_only(checkpoint):
    ex = executor(checkpoint)
    for kind in ("cumulative", "final_only"):
        add(ex, kind, PROMPTS[0], MaskPredictParams(length=6, iterations=3, output_kind=kind, return_pass_texts=True))
    seen = {"cumulative": [], "final_only": []}
    while ex.has_unfinished():
        for out in ex.step():
            seen[out.request_id].append(out)
    assert len(seen["cumulative"]) == 3 and [o.finished for o in seen["final_only"]] == [True]
    every, final = seen["cumulative"][-1], seen["final_only"][0]
    assert final.token_ids == every.token_ids and final.text == every.text
    assert final.metrics.nfe == 3 and final.metrics.pass_texts == every.metrics.pass_texts
    assert final.metrics.ttft is not None and final.metrics.ttft < final.metrics.e2e


def test_abort(checkpoint):
    ex = executor(checkpoint)
    add(ex, "a", PROMPTS[0], MaskPredictParams(length=4, iterations=4))
    add(ex, "b", PROMPTS[1], MaskPredictParams(length=4, iterations=4))
    ex.step()
    assert ex.abort("a") and not ex.abort("a") and not ex.abort("zzz")
    assert set(drain(ex)) == {"b"}


def _live_requests():
    return sum(type(o) is _Request for o in gc.get_objects())  # not isinstance: some objects warn on it


def test_requests_that_leave_are_freed_without_the_garbage_collector(checkpoint, monkeypatch):
    """A request and its sequences point at each other; a request that leaves (finished,
    aborted waiting or running, failed in a pass, or failed with every other) must not stay
    behind as a cycle for the collector to find."""
    ex = executor(checkpoint)
    poison_forward(ex, monkeypatch)
    gc.collect()
    before = _live_requests()
    gc.disable()
    try:
        add(ex, "running", PROMPTS[0], MaskPredictParams(length=4, iterations=4))
        add(ex, "bad", [10, POISON, 11], MaskPredictParams(length=3, iterations=2))
        add(ex, "done", PROMPTS[1], MaskPredictParams(length_candidates=[2, 3], iterations=1))
        ex.step()  # "bad" fails alone, "done" finishes
        add(ex, "waiting", PROMPTS[2], MaskPredictParams(length=4, iterations=4))
        assert ex.abort("waiting") and ex.abort("running") and not ex.has_unfinished()
        add(ex, "last", PROMPTS[0], MaskPredictParams(length=4, iterations=4))
        ex.step()
        ex.fail_all("stopped")
        assert _live_requests() == before
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "kwargs, field",
    [(dict(iterations=0), "iterations"), (dict(length=0), "length"), (dict(threshold=0.0), "threshold"),
     (dict(threshold=1.5), "threshold"), (dict(length_candidates=[4, 0]), "length_candidates"),
     (dict(output_kind="delta"), "output_kind")],
)
def test_bad_params(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MaskPredictParams(**kwargs)


def test_bad_requests_are_named_and_serving_continues(checkpoint):
    from engine import Engine

    engine = Engine(checkpoint[1], device="cpu", kernel_backend="torch", max_num_batched_tokens=200)
    ok = MaskPredictParams(length=4, iterations=2)
    engine.add_request(PROMPTS[0], ok, request_id="ok")
    with pytest.raises(TypeError, match="MaskPredictParams"):
        engine.add_request(PROMPTS[0], SamplingParams())
    with pytest.raises(ValueError, match="max positions"):
        engine.add_request(PROMPTS[0], MaskPredictParams(length=60))  # 3 + 60 + 2 > 64
    with pytest.raises(ValueError, match="max positions"):
        engine.add_request(PROMPTS[0], MaskPredictParams(length_candidates=[4, 61]))
    with pytest.raises(ValueError, match="iterations"):
        engine.add_request(PROMPTS[0], MaskPredictParams(length=8, iterations=2, block_length=2))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.add_request([5, 9999], ok)
    with pytest.raises(ValueError, match="request_id"):
        engine.add_request(PROMPTS[0], ok, request_id="ok")
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        engine.add_request(PROMPTS[0], MaskPredictParams(length_candidates=[50, 51, 52, 53]))
    done = {}
    while engine.has_unfinished():
        done.update({o.request_id: o for o in engine.step() if o.finished})
    assert set(done) == {"ok"}


# ---- through the public API -------------------------------------------------------------


def test_llm_generate_matches_oracle(checkpoint):
    from engine import LLM

    _, path, hf, loaded = checkpoint
    llm = LLM(path, device="cpu", kernel_backend="torch")
    params = [MIXED[0], MaskPredictParams(length=5, iterations=3, remask="commit"), MIXED[2]]
    outs = llm.generate(["the cat sees a dog", PROMPTS[1], "a red car"], params)
    tok = loaded.tokenizer
    for out, p, prompt in zip(outs, params, ["the cat sees a dog", PROMPTS[1], "a red car"]):
        ids = prompt if isinstance(prompt, list) else tok(prompt, add_special_tokens=False)["input_ids"]
        assert out.prompt_token_ids == ids
        assert_matches_oracle(checkpoint, out, ids, p)


def test_engine_requests_join_mid_flight(checkpoint):
    from engine import Engine

    _, path, _, _ = checkpoint
    engine = Engine(path, device="cpu", kernel_backend="torch", max_num_seqs=3)
    requests = list(zip(PROMPTS, MIXED))
    first = engine.add_request(requests[0][0], requests[0][1])
    done, joined = {}, {}
    while engine.has_unfinished():
        step = len(joined) + 1
        if step < len(requests):  # one new request before every pass
            joined[engine.add_request(requests[step][0], requests[step][1])] = step
        done.update({o.request_id: o for o in engine.step() if o.finished})
    joined[first] = 0
    assert len(done) == len(requests)
    for request_id, i in joined.items():
        assert_matches_oracle(checkpoint, done[request_id], *requests[i])


def test_engine_rejects_wrong_params_and_keeps_serving(checkpoint, tmp_path):
    from engine import LLM
    from tests.tiny_causal import make_gpt2

    _, path, _, _ = checkpoint
    llm = LLM(path, device="cpu", kernel_backend="torch")
    with pytest.raises(TypeError, match="SamplingParams"):
        llm.generate("the cat", SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="max positions"):
        llm.generate(["the cat", "a dog"], MaskPredictParams(length=62))
    assert not llm.engine.has_unfinished()  # nothing of a rejected call stays queued
    out = llm.generate("the cat", MaskPredictParams(length=3, iterations=2))[0]
    assert out.finished and len(out.token_ids) == 3

    causal = LLM(make_gpt2(str(tmp_path)), device="cpu", kernel_backend="torch")
    with pytest.raises(TypeError, match="MaskPredictParams"):
        causal.generate([5, 6, 7], MaskPredictParams())
    assert len(causal.generate([5, 6, 7], SamplingParams(temperature=0.0, max_tokens=2))[0].token_ids) == 2


# ---- the rule table, fault isolation, lazy text ------------------------------------------


def test_a_new_remask_rule_is_one_function_and_one_table_entry(checkpoint, monkeypatch):
    from engine.mask_rules import REMASK_RULES, smallest

    def rightmost(view):
        """Fill every prediction; re-mask the n(t) rightmost slots of the block."""
        slots = torch.arange(view.in_block.shape[1], device=view.in_block.device).expand_as(view.confidence)
        return view.predicted, smallest(-slots, view.in_block, view.keep_masked)

    with pytest.raises(ValueError, match="remask must be one of"):
        MaskPredictParams(remask="rightmost")
    monkeypatch.setitem(REMASK_RULES, "rightmost", rightmost)
    params = MaskPredictParams(length=6, iterations=3, remask="rightmost", return_pass_texts=True)
    out = run(executor(checkpoint), [("a", PROMPTS[0], params), ("b", PROMPTS[1], MIXED[1])])["a"]
    mask = checkpoint[3].tokenizer.mask_token
    patterns = [[word == mask for word in text.split()] for text in out.metrics.pass_texts]
    assert patterns[:2] == [[False] * 2 + [True] * 4, [False] * 4 + [True] * 2]  # n(t) = 4, 2, 0
    assert not any(patterns[2]) and out.metrics.tokens_per_pass == [2, 2, 2]


POISON = 77  # a prompt token that makes the encoder raise for the pass it is in


def poison_forward(ex, monkeypatch):
    forward = ex.model.forward

    def forward_unless_poisoned(input_ids, positions, meta, rows=None):
        if bool((input_ids == POISON).any()):
            raise RuntimeError("poisoned input")
        return forward(input_ids, positions, meta, rows)

    monkeypatch.setattr(ex.model, "forward", forward_unless_poisoned)


def test_a_request_whose_pass_fails_fails_alone(checkpoint, monkeypatch):
    ex = executor(checkpoint)
    poison_forward(ex, monkeypatch)
    requests = [(str(i), ids, p) for i, (ids, p) in enumerate(zip(PROMPTS, MIXED))]
    requests.insert(2, ("bad", [10, POISON, 11], MaskPredictParams(length=5, iterations=3)))
    for request in requests:
        add(ex, *request)
    first = {out.request_id: out for out in ex.step()}
    bad = first["bad"]
    assert bad.finished and bad.finish_reason == "error" and "poisoned input" in bad.error
    assert all(not out.finished for rid, out in first.items() if rid != "bad")
    done = drain(ex)
    for rid, ids, params in requests:
        if rid != "bad":
            assert_matches_oracle(checkpoint, done[rid], ids, params)
    add(ex, "again", [POISON], MaskPredictParams(length=3, iterations=2))  # the executor is still usable
    assert drain(ex)["again"].finish_reason == "error" and not ex.has_unfinished()


def test_text_is_decoded_only_where_read_and_a_bad_pass_text_fails_alone(checkpoint, monkeypatch):
    import engine.mask_outputs as mask_outputs

    decoded = []

    def decode_unless_long(tokenizer, sequences, skip_special_tokens=True):
        decoded.append(len(sequences))
        if any(len(seq) >= 7 for seq in sequences):
            raise ValueError("cannot decode")
        return batch_decode(tokenizer, sequences, skip_special_tokens)

    batch_decode = mask_outputs.batch_decode
    monkeypatch.setattr(mask_outputs, "batch_decode", decode_unless_long)
    ex = executor(checkpoint)
    quiet = MaskPredictParams(length=6, iterations=3)  # no pass texts: nothing decoded while running
    texts = MaskPredictParams(length=4, iterations=3, return_pass_texts=True)
    add(ex, "quiet", PROMPTS[0], quiet)
    done = drain(ex)
    assert decoded == []
    assert done["quiet"].text == hf_mask_predict(checkpoint[2], checkpoint[3].tokenizer, PROMPTS[0], quiet)[0].text
    assert decoded == [1]
    for request in [("a", PROMPTS[1], texts), ("long", PROMPTS[2], MaskPredictParams(**{**vars(texts), "length": 9})),
                    ("b", PROMPTS[3], texts)]:
        add(ex, *request)
    done = drain(ex)
    assert done["long"].finish_reason == "error" and "cannot decode" in done["long"].error
    for rid, prompt in (("a", PROMPTS[1]), ("b", PROMPTS[3])):
        want = assert_matches_oracle(checkpoint, done[rid], prompt, texts)
        assert done[rid].metrics.pass_texts == want.pass_texts


def test_rows_leave_and_join_across_widths(checkpoint):
    """The longest sequence finishes first (the batch narrows), a longer one joins later
    (it widens again); every request still equals the oracle."""
    ex = executor(checkpoint)
    requests = [("long", PROMPTS[2], MaskPredictParams(length=30, iterations=1)),
                ("short", PROMPTS[0], MaskPredictParams(length=3, iterations=5, remask="random", seed=2)),
                ("cands", PROMPTS[1], MaskPredictParams(length_candidates=[2, 5], iterations=4)),
                ("later", PROMPTS[3], MaskPredictParams(length=20, iterations=5, block_length=7, stop_early=True))]
    for request in requests[:3]:
        add(ex, *request)
    done = {out.request_id: out for out in ex.step() if out.finished}
    assert set(done) == {"long"}
    ex.step()
    add(ex, *requests[3])
    done = drain(ex, done)
    for rid, ids, params in requests:
        assert_matches_oracle(checkpoint, done[rid], ids, params)


def test_rows_with_nothing_masked_skip_the_encoder(checkpoint, monkeypatch):
    """More passes than slots: once a's schedule reaches 0 its passes are no-ops that skip
    the encoder while b's rows still run (a pass that packs only some rows)."""
    ex = executor(checkpoint)
    forward, sequences_per_pass = ex.model.forward, []

    def counting_forward(input_ids, positions, meta, rows=None):
        sequences_per_pass.append(len(meta.cu_seqlens_q) - 1)
        return forward(input_ids, positions, meta, rows)

    monkeypatch.setattr(ex.model, "forward", counting_forward)
    requests = [("a", PROMPTS[0], MaskPredictParams(length=2, iterations=6)),  # n(t) = 1, 1, 1, 0, 0, 0
                ("b", PROMPTS[2], MaskPredictParams(length=8, iterations=8, remask="commit"))]
    done = run(ex, requests)
    assert sequences_per_pass == [2, 2, 2, 2, 1, 1, 1, 1]
    for rid, ids, params in requests:
        assert_matches_oracle(checkpoint, done[rid], ids, params)
    assert done["a"].metrics.tokens_per_pass == [1, 0, 0, 1, 0, 0]


def test_the_largest_iterations_are_admitted_and_follow_the_schedule(checkpoint):
    from engine.mask_schedule import masked_after

    ex = executor(checkpoint)
    params = MaskPredictParams(length=5, iterations=2**31 - 1, schedule="cosine", return_pass_texts=True)
    add(ex, "a", PROMPTS[0], params)
    mask = checkpoint[3].tokenizer.mask_token
    for t in range(3):
        out = ex.step()[0]
        assert out.metrics.nfe == t + 1
        assert out.metrics.pass_texts[-1].split().count(mask) == masked_after(5, t, params.iterations, "cosine")
    assert ex.abort("a") and not ex.has_unfinished()
