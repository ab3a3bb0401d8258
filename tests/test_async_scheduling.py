"""Async scheduling (engine/async_executor.py) gives the synchronous executor's outputs.

On CPU the device work is done by the time a call returns, so nothing overlaps here; what
these tests check is the bookkeeping that makes overlap safe on a GPU: placeholders read on
the device, outputs one step later but the same, no step past max_tokens, preemption and
the prefix cache around a token in flight, aborts, and fault isolation.
"""
import pytest

from engine import LLM, Engine, SamplingParams
from engine.async_executor import AsyncAutoregressiveExecutor
from engine.autoregressive import AutoregressiveExecutor
from tests.fault_injection import (
    PlantedFailure, assert_kv_accounting, assert_no_kv_leak, poisoned_forward, run_to_end,
)
from tests.tiny_causal import make_gpt2, make_llama

PROMPTS = [[5, 6, 7], [9, 10], [20, 21, 22, 23, 24], [30, 31, 32], [5, 6, 7, 8], [40]]
CONFIG = dict(block_size=4, num_kv_blocks=64)
PARAMS = {
    "greedy": SamplingParams(temperature=0.0, max_tokens=12),
    "sampled": SamplingParams(temperature=1.0, top_k=20, top_p=0.9, max_tokens=10, seed=7),
    "min_tokens": SamplingParams(temperature=0.9, max_tokens=10, min_tokens=6, seed=3),
    "stop_ids": SamplingParams(temperature=1.0, max_tokens=16, stop_token_ids=[11, 12, 13], seed=5),
    "stop_strings": SamplingParams(temperature=1.0, max_tokens=16, stop=["w1"], seed=2),
}


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    root = tmp_path_factory.mktemp("async")
    return {"gpt2": make_gpt2(root), "llama": make_llama(root)}


def _pair(path, **config):
    return LLM(path, async_scheduling=True, **config), LLM(path, async_scheduling=False, **config)


def _same(outs_a, outs_b):
    assert [(o.token_ids, o.finish_reason, o.text) for o in outs_a] == \
        [(o.token_ids, o.finish_reason, o.text) for o in outs_b]


def test_the_default_is_synchronous_on_cpu(causal):
    assert isinstance(LLM(causal["gpt2"], **CONFIG).engine.executor, AutoregressiveExecutor)
    assert not isinstance(LLM(causal["gpt2"], **CONFIG).engine.executor, AsyncAutoregressiveExecutor)
    assert isinstance(LLM(causal["gpt2"], async_scheduling=True, **CONFIG).engine.executor,
                      AsyncAutoregressiveExecutor)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("kind", list(PARAMS))
def test_outputs_equal_the_synchronous_executor(causal, family, kind):
    async_llm, sync_llm = _pair(causal[family], **CONFIG)
    _same(async_llm.generate(PROMPTS, PARAMS[kind]), sync_llm.generate(PROMPTS, PARAMS[kind]))
    assert_no_kv_leak(async_llm.engine)


def test_logprobs_match_within_float_rounding(causal):
    """Tokens are equal; logprobs equal up to the last bits, since a request that stopped
    stays one more step in the batch and the batch's shape moves the matmul's rounding."""
    params = SamplingParams(temperature=0.8, max_tokens=8, seed=1, logprobs=3)
    async_llm, sync_llm = _pair(causal["llama"], **CONFIG)
    outs_a, outs_s = async_llm.generate(PROMPTS, params), sync_llm.generate(PROMPTS, params)
    _same(outs_a, outs_s)
    for a, s in zip(outs_a, outs_s):
        for entry_a, entry_s in zip(a.logprobs, s.logprobs, strict=True):
            assert entry_a.keys() == entry_s.keys()
            assert all(abs(entry_a[t] - entry_s[t]) < 1e-4 for t in entry_a)


def test_no_step_runs_past_max_tokens(causal):
    """Without stops every request ends at max_tokens, which the scheduler knows ahead: async
    computes exactly the synchronous executor's tokens."""
    params = SamplingParams(temperature=0.0, max_tokens=9, ignore_eos=True)
    async_llm, sync_llm = _pair(causal["gpt2"], **CONFIG)
    _same(async_llm.generate(PROMPTS, params), sync_llm.generate(PROMPTS, params))
    assert async_llm.engine.stats()["num_computed_tokens"] == sync_llm.engine.stats()["num_computed_tokens"]


def test_streamed_outputs_never_show_a_placeholder(causal):
    engine = Engine(causal["llama"], async_scheduling=True, **CONFIG)
    for prompt in PROMPTS:
        engine.add_request(prompt, PARAMS["sampled"])
    seen = {}
    while engine.has_unfinished():
        for out in engine.step():
            assert all(t >= 0 for t in out.token_ids), out.token_ids
            assert out.token_ids[: len(seen.get(out.request_id, []))] == seen.get(out.request_id, [])
            seen[out.request_id] = list(out.token_ids)
        assert_kv_accounting(engine)
    assert len(seen) == len(PROMPTS)


def test_preemption_and_prefix_cache_around_a_token_in_flight(causal):
    """A cache too small for every request preempts requests that hold a placeholder; shared
    prompt prefixes hit the prefix cache. Outputs stay the synchronous ones."""
    prompts = [[5, 6, 7, 8, 9, 10, 11, 12, 13 + i] for i in range(8)] + PROMPTS
    params = SamplingParams(temperature=1.0, max_tokens=14, seed=11, ignore_eos=True)
    async_llm, sync_llm = _pair(causal["llama"], block_size=4, num_kv_blocks=20)
    _same(async_llm.generate(prompts, params), sync_llm.generate(prompts, params))
    assert async_llm.engine.stats()["num_preemptions"] > 0
    assert_no_kv_leak(async_llm.engine)


def test_an_abort_while_its_token_is_in_flight(causal):
    engine = Engine(causal["gpt2"], async_scheduling=True, **CONFIG)
    params = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    rids = [engine.add_request(p, params) for p in PROMPTS[:3]]
    engine.step()
    engine.step()  # the second step is in flight: each request holds a placeholder
    assert engine.abort_request(rids[1])
    finished = run_to_end(engine)
    assert rids[1] not in finished
    expected = LLM(causal["gpt2"], **CONFIG).generate([PROMPTS[0], PROMPTS[2]], params)
    assert [finished[rids[0]].token_ids, finished[rids[2]].token_ids] == [o.token_ids for o in expected]
    assert_no_kv_leak(engine)


def test_a_request_failing_in_the_forward_fails_alone(causal):
    """The victim's generated token makes the forward raise while the previous step is still
    unread: that step completes, then the failed one reruns request by request; a step
    still gives one output per request."""
    path = causal["llama"]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    good = LLM(path, **CONFIG).generate(PROMPTS[:3], params)
    victim_tokens = LLM(path, **CONFIG).generate([PROMPTS[3]], params)[0].token_ids
    taken = {t for o in good for t in o.token_ids} | {t for p in PROMPTS for t in p}
    poison = next(t for t in victim_tokens[2:] if t not in taken)
    engine = Engine(path, async_scheduling=True, **CONFIG)
    with poisoned_forward(engine.loaded.model, poison):
        rids = [engine.add_request(p, params) for p in PROMPTS[:3]]
        victim = engine.add_request(PROMPTS[3], params)
        finished = {}
        while engine.has_unfinished():
            outputs = engine.step()
            assert len({o.request_id for o in outputs}) == len(outputs)  # one output per request and step
            finished.update((o.request_id, o) for o in outputs if o.finished)
    assert [finished[r].token_ids for r in rids] == [o.token_ids for o in good]
    failed = finished[victim]
    assert failed.finish_reason == "error" and isinstance(failed.error, str) and PlantedFailure.__name__ in failed.error
    assert all(t >= 0 for t in failed.token_ids)
    assert_no_kv_leak(engine)


@pytest.mark.parametrize("option, message", [
    (dict(speculative_config={"model": "draft", "num_speculative_tokens": 2}), "speculative decoding"),
    (dict(tensor_parallel_size=2), "tensor parallelism"),
])
def test_async_scheduling_refuses_what_runs_synchronously(causal, option, message):
    from engine.config import EngineConfig

    with pytest.raises(ValueError, match=f"async_scheduling is not supported with {message}"):
        EngineConfig(causal["gpt2"], device="cpu", async_scheduling=True, **option)
    assert EngineConfig(causal["gpt2"], device="cpu", **option).async_scheduling is False
