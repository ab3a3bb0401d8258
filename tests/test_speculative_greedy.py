"""Speculative greedy decoding emits exactly the causal LM's own greedy tokens: for masked and
causal drafts that agree with the target always, often or never, under continuous batching,
chunked prefill, prefix caching and preemption, with stop conditions and logprobs."""
import pytest

from engine import LLM, Engine, SamplingParams
from tests.stress import ENGINE as STRESS_ENGINE
from tests.stress import run_requests, stress_requests
from tests.test_tensor_parallel import wait_gone
from tests.tiny_speculative import make_causal, make_masked, make_truncated

GREEDY = dict(temperature=0.0, ignore_eos=True)
PROMPTS = [[5, 6, 7], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [30], [40, 41, 42, 43, 44, 45]]
SMALL = dict(block_size=4, num_kv_blocks=96)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec-greedy")
    gpt2 = make_causal(root, "gpt2")
    llama = make_causal(root, "llama", arch="llama")
    return {
        "gpt2": gpt2, "llama": llama,
        "truncated": make_truncated(gpt2, root, "gpt2-truncated"),  # agrees often
        "masked": make_masked(root, "masked"),  # random: agrees by chance only
        "llama-truncated": make_truncated(llama, root, "llama-truncated"),
    }


def plain_outputs(target, prompts, params, **config):
    return LLM(target, **{**SMALL, **config}).generate(prompts, params)


def assert_same(outs, ref):
    assert [o.token_ids for o in outs] == [r.token_ids for r in ref]
    assert [o.finish_reason for o in outs] == [r.finish_reason for r in ref]


DRAFTS = {  # name: (target, draft, extra speculative options)
    "causal": ("gpt2", "truncated", {}),
    "identical": ("gpt2", "gpt2", {}),  # every draft accepted: the bonus-token path
    "masked-1-pass": ("gpt2", "masked", {}),
    "masked-3-passes": ("gpt2", "masked", {"draft_passes": 3, "draft_length": 6}),
    "llama-causal": ("llama", "llama-truncated", {}),
}


@pytest.mark.parametrize("name", list(DRAFTS))
def test_greedy_equals_the_target_alone(models, name):
    target, draft, extra = DRAFTS[name]
    params = [SamplingParams(max_tokens=n, **GREEDY) for n in (12, 1, 7, 20)]
    spec = {"model": models[draft], "num_speculative_tokens": 4, **extra}
    llm = LLM(models[target], speculative_config=spec, **SMALL)
    outs = llm.generate(PROMPTS, params)
    assert_same(outs, plain_outputs(models[target], PROMPTS, params))
    assert [len(o.token_ids) for o in outs] == [12, 1, 7, 20]
    stats = llm.engine.stats()
    assert stats["num_free_kv_blocks"] == stats["num_kv_blocks"]  # rejected drafts' blocks came back
    spec_stats = stats["speculative"]
    assert spec_stats["num_drafted"] > 0
    if name == "identical":
        assert spec_stats["num_accepted"] == spec_stats["num_drafted"]
    if name == "causal":
        assert 0 < spec_stats["num_accepted"] < spec_stats["num_drafted"]


def test_stress_preemption_chunked_prefill_and_prefix_hits(models):
    """The preemption stress scenario (tests/stress.py: 120 random requests, half sharing a
    prefix, chunked prefill) in a cache of 16 blocks, too small even with drafts giving way:
    each output equals the target's own greedy output."""
    requests = stress_requests(seed=3, count=120)
    want, _ = run_requests(Engine(models["gpt2"], block_size=4, num_kv_blocks=1024), requests)
    for draft in ("truncated", "masked"):
        spec = {"model": models[draft], "num_speculative_tokens": 3}
        engine = Engine(models["gpt2"], speculative_config=spec, **{**STRESS_ENGINE, "num_kv_blocks": 16})
        got, cached = run_requests(engine, requests)
        assert got == want
        stats = engine.stats()
        assert stats["num_preemptions"] > 0 and cached > 0
        assert stats["num_free_kv_blocks"] == stats["num_kv_blocks"]
        assert stats["speculative"]["num_accepted"] > 0 or draft == "masked"
        drafter = engine.executor.drafter
        if draft == "truncated":  # every draft sequence released with its request
            assert not drafter.sequences and drafter.block_manager.num_free_blocks == drafter.block_manager.num_blocks


def test_tensor_parallel_target(models):
    """A target split over 2 processes (gloo) verifies a local draft's tokens like the
    unsplit target decodes alone."""
    params = SamplingParams(max_tokens=12, **GREEDY)
    ref = plain_outputs(models["gpt2"], PROMPTS, params)
    spec = {"model": models["truncated"], "num_speculative_tokens": 3}
    with LLM(models["gpt2"], tensor_parallel_size=2, speculative_config=spec, **SMALL) as llm:
        workers = llm.engine.loaded.model.worker_pids
        assert_same(llm.generate(PROMPTS, params), ref)
        assert llm.engine.stats()["speculative"]["num_accepted"] > 0
    assert wait_gone(workers)


def test_stop_conditions_apply_to_accepted_tokens(models):
    """Stop tokens, stop strings, min_tokens and eos end a request exactly where the target
    alone ends it, even when the stop falls among accepted drafts."""
    target = models["gpt2"]
    free = plain_outputs(target, PROMPTS, SamplingParams(max_tokens=16, **GREEDY))
    stop_ids = [o.token_ids[5] for o in free]  # each output contains it from position 5 on
    tok = LLM(target, **SMALL).tokenizer
    stop_text = [tok.decode(o.token_ids[3:5]) for o in free]
    params = [
        SamplingParams(max_tokens=16, stop_token_ids=[stop_ids[0]], **GREEDY),
        SamplingParams(max_tokens=16, stop=[stop_text[1]], **GREEDY),
        SamplingParams(max_tokens=16, min_tokens=6, stop_token_ids=[stop_ids[2]], **GREEDY),
        SamplingParams(max_tokens=16, temperature=0.0, stop_token_ids=[stop_ids[3]]),
    ]
    ref = plain_outputs(target, PROMPTS, params)
    for draft in ("identical", "truncated"):
        name = "gpt2" if draft == "identical" else draft
        spec = {"model": models[name], "num_speculative_tokens": 5}
        outs = LLM(target, speculative_config=spec, **SMALL).generate(PROMPTS, params)
        assert_same(outs, ref)
        assert [o.text for o in outs] == [r.text for r in ref]
    assert ref[0].finish_reason == "stop" and ref[1].finish_reason == "stop"


def test_logprobs_equal_the_target_alone(models):
    params = SamplingParams(max_tokens=10, logprobs=3, **GREEDY)
    ref = plain_outputs(models["gpt2"], PROMPTS, params)
    spec = {"model": models["truncated"], "num_speculative_tokens": 3}
    outs = LLM(models["gpt2"], speculative_config=spec, **SMALL).generate(PROMPTS, params)
    assert_same(outs, ref)
    for out, r in zip(outs, ref):
        assert [sorted(e) for e in out.logprobs] == [sorted(e) for e in r.logprobs]
        for mine, theirs in zip(out.logprobs, r.logprobs):
            assert all(abs(mine[t] - theirs[t]) < 1e-4 for t in theirs)


def test_metrics_per_request(models):
    spec = {"model": models["truncated"], "num_speculative_tokens": 3}
    llm = LLM(models["gpt2"], speculative_config=spec, **SMALL)
    out = llm.generate([PROMPTS[1]], SamplingParams(max_tokens=20, **GREEDY))[0]
    m = out.metrics.speculative
    assert m.num_drafted == sum(m.drafted_per_position) and m.num_accepted == sum(m.accepted_per_position)
    # every step emits its accepted drafts plus one token
    assert m.num_accepted + m.num_steps == out.metrics.generated_tokens
    assert m.mean_accepted_length == out.metrics.generated_tokens / m.num_steps
    assert all(0 <= r <= 1 for r in m.acceptance_per_position)


def test_abort_frees_target_and_draft_caches(models):
    spec = {"model": models["truncated"], "num_speculative_tokens": 3}
    engine = Engine(models["gpt2"], speculative_config=spec, **SMALL)
    ids = [engine.add_request(p, SamplingParams(max_tokens=30, **GREEDY)) for p in PROMPTS]
    engine.step()
    engine.step()
    for request_id in ids:
        assert engine.abort_request(request_id)
    assert not engine.has_unfinished()
    drafter = engine.executor.drafter
    assert engine.stats()["num_free_kv_blocks"] == engine.stats()["num_kv_blocks"]
    assert drafter.block_manager.num_free_blocks == drafter.block_manager.num_blocks and not drafter.sequences


def test_adaptive_greedy_equals_the_target_alone(models):
    params = SamplingParams(max_tokens=24, **GREEDY)
    prompts = PROMPTS * 3
    spec = {"model": models["truncated"], "num_speculative_tokens": 4, "adaptive": True}
    llm = LLM(models["gpt2"], speculative_config=spec, **SMALL)
    assert_same(llm.generate(prompts, params), plain_outputs(models["gpt2"], prompts, params))


def test_bundled_pair_greedy_equals_the_target_alone():
    """The bundled GPT-2 with the bundled CMLM (its trained 20 answer slots, two passes) and
    with the bundled small GPT-2 as drafts, on held-out prompts."""
    from benchmarks.speculative import ASSETS, prompts

    target = str(ASSETS / "ar-gpt2")
    texts = prompts(12, seed=99)
    params = SamplingParams(temperature=0.0, max_tokens=24)
    ref = LLM(target).generate(texts, params)
    for spec in ({"model": str(ASSETS / "cmlm-bert"), "num_speculative_tokens": 4, "draft_length": 20,
                  "draft_passes": 2},
                 {"model": str(ASSETS / "ar-gpt2-draft"), "num_speculative_tokens": 4}):
        llm = LLM(target, speculative_config=spec)
        assert_same(llm.generate(texts, params), ref)
        assert llm.engine.stats()["speculative"]["num_accepted"] > 0


def test_triton_backend_verifies_like_plain_decoding(models):
    """The verify forward through the Triton kernels (paged prefill over k + 1 rows, beside a
    decode sequence in the same step), in Triton's interpreter on CPU."""
    prompts, params = [PROMPTS[0], PROMPTS[3]], [SamplingParams(max_tokens=5, **GREEDY),
                                                 SamplingParams(max_tokens=2, **GREEDY)]
    options = dict(kernel_backend="triton", block_size=4, num_kv_blocks=16)
    ref = LLM(models["gpt2"], **options).generate(prompts, params)
    spec = {"model": models["truncated"], "num_speculative_tokens": 2}
    assert_same(LLM(models["gpt2"], speculative_config=spec, **options).generate(prompts, params), ref)
