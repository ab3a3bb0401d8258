"""Autoregressive engine end to end on tiny random checkpoints, against HF and against itself."""
import pytest
import torch

from engine import LLM, Engine, SamplingParams
from tests.stress import ENGINE as STRESS_ENGINE
from tests.stress import run_requests, stress_requests
from tests.tiny_causal import MAKERS, hf_model

GREEDY = dict(temperature=0.0, ignore_eos=True)
# Prompts of different lengths; the longest spans several KV blocks of 4.
PROMPTS = [[5, 6, 7], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [30], [40, 41, 42, 43, 44, 45]]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {name: make(root) for name, make in MAKERS.items()}


@torch.no_grad()
def hf_greedy(path, prompts, max_tokens):
    model = hf_model(path)
    model.generation_config.eos_token_id = None  # like ignore_eos: plain greedy for max_tokens
    out = []
    for p in prompts:
        ids = model.generate(torch.tensor([p]), do_sample=False, max_new_tokens=max_tokens, pad_token_id=0)
        out.append(ids[0, len(p):].tolist())
    return out


@pytest.mark.parametrize("arch", list(MAKERS))
def test_greedy_matches_hf_generate_torch_backend(checkpoints, arch):
    path = checkpoints[arch]
    llm = LLM(path, kernel_backend="torch", block_size=4, num_kv_blocks=64)
    outs = llm.generate(PROMPTS, SamplingParams(max_tokens=10, **GREEDY))
    assert [o.token_ids for o in outs] == hf_greedy(path, PROMPTS, 10)
    assert all(o.finished and o.finish_reason == "length" for o in outs)


@pytest.mark.parametrize("arch", list(MAKERS))
def test_greedy_matches_hf_generate_triton_backend(checkpoints, arch):
    path, prompts = checkpoints[arch], [PROMPTS[0], PROMPTS[3]]
    llm = LLM(path, kernel_backend="triton", block_size=4, num_kv_blocks=16)
    outs = llm.generate(prompts, SamplingParams(max_tokens=3, **GREEDY))
    assert [o.token_ids for o in outs] == hf_greedy(path, prompts, 3)


def test_logprobs_match_hf_log_softmax(checkpoints):
    """Prefill and decode logits within fp32 tolerance of HF, seen through logprobs."""
    path = checkpoints["llama"]
    llm = LLM(path, block_size=4, num_kv_blocks=32)
    prompt = PROMPTS[1]
    out = llm.generate([prompt], SamplingParams(max_tokens=6, logprobs=3, **GREEDY))[0]
    with torch.no_grad():
        logits = hf_model(path)(torch.tensor([prompt + out.token_ids])).logits[0].float()
    ref = torch.log_softmax(logits, dim=-1)[len(prompt) - 1: -1]
    assert len(out.logprobs) == 6
    for step, (token, entry) in enumerate(zip(out.token_ids, out.logprobs)):
        assert token in entry and len(entry) == 3  # greedy: the sampled token is the top one
        top = ref[step].topk(3).indices.tolist()
        assert sorted(entry) == sorted(top)
        for t, lp in entry.items():
            assert lp == pytest.approx(ref[step, t].item(), abs=1e-4)


def test_stress_preemption_matches_requests_run_alone(checkpoints):
    """200 random requests through a cache that forces preemption; each output equals its solo run."""
    path = checkpoints["gpt2"]
    requests = stress_requests()
    engine = Engine(path, **STRESS_ENGINE)
    got, cached_tokens = run_requests(engine, requests)
    assert len(got) == len(requests)
    stats = engine.stats()
    assert stats["num_preemptions"] > 0
    assert cached_tokens > 0
    assert stats["num_free_kv_blocks"] == stats["num_kv_blocks"]
    assert all(c == 0 for c in engine.executor.block_manager.ref_counts)

    solo = Engine(path, block_size=4, num_kv_blocks=24, max_num_seqs=1, enable_prefix_caching=False)
    for i, (p, n) in enumerate(requests):
        rid = solo.add_request(p, SamplingParams(max_tokens=n, **GREEDY))
        while solo.has_unfinished():
            for out in solo.step():
                if out.finished:
                    assert out.request_id == rid and out.token_ids == got[i], f"request {i} differs"
                    assert len(out.token_ids) == n


def test_prefix_caching_same_outputs_fewer_prefill_tokens(checkpoints):
    path = checkpoints["llama"]
    shared = list(range(4, 30))
    first = [shared + [50]]
    later = [shared + [60, 61], shared[:13] + [70], shared + [80, 81, 82]]
    params = SamplingParams(max_tokens=5, **GREEDY)
    results = {}
    for caching in (True, False):
        llm = LLM(path, block_size=4, num_kv_blocks=64, enable_prefix_caching=caching)
        outs = llm.generate(first, params) + llm.generate(later, params)
        results[caching] = (outs, llm.engine.stats()["num_computed_tokens"])
    (cached_outs, cached_work), (plain_outs, plain_work) = results[True], results[False]
    assert [o.token_ids for o in cached_outs] == [o.token_ids for o in plain_outs]
    assert [o.metrics.cached_prompt_tokens for o in cached_outs] == [0, 24, 12, 24]
    assert all(o.metrics.cached_prompt_tokens == 0 for o in plain_outs)
    assert cached_work == plain_work - 60


@pytest.mark.parametrize("budget", [7, 3, 1])
def test_chunked_prefill_gives_the_same_output(checkpoints, budget):
    """Chunks of 7 tokens; with a budget of 3, two decoding requests and one-token chunks of
    the long prompt share steps that look like decode steps (one new token per sequence);
    with 1, the long prompt goes one token at a time."""
    path = checkpoints["qwen2"]
    prompts = [[5, 6], [9], [(7 * i) % 120 + 4 for i in range(50)]]
    params = SamplingParams(max_tokens=8, **GREEDY)
    whole = [o.token_ids for o in LLM(path, block_size=4, num_kv_blocks=48).generate(prompts, params)]
    chunked = LLM(path, block_size=4, num_kv_blocks=48, max_num_batched_tokens=budget).generate(prompts, params)
    assert [o.token_ids for o in chunked] == whole
    assert whole[2] == hf_greedy(path, prompts[2:], 8)[0]


def test_seeded_sampling_independent_of_batch(checkpoints):
    path = checkpoints["mistral"]
    seeded = SamplingParams(temperature=0.9, top_k=40, top_p=0.9, seed=1234, max_tokens=8, ignore_eos=True)
    alone = LLM(path, num_kv_blocks=64, block_size=4).generate([PROMPTS[0]], seeded)[0].token_ids
    others = [SamplingParams(temperature=t, seed=s, max_tokens=m, ignore_eos=True)
              for t, s, m in ((1.0, None, 5), (0.5, 7, 9), (0.0, None, 3))]
    llm = LLM(path, num_kv_blocks=64, block_size=4, seed=99)
    outs = llm.generate([PROMPTS[1], PROMPTS[2], PROMPTS[0], PROMPTS[3]], [others[0], others[1], seeded, others[2]])
    assert outs[2].token_ids == alone
    reseeded = SamplingParams(temperature=0.9, top_k=40, top_p=0.9, seed=4321, max_tokens=8, ignore_eos=True)
    assert llm.generate([PROMPTS[0]], reseeded)[0].token_ids != alone


def test_unseeded_requests_follow_the_engine_seed(checkpoints):
    path = checkpoints["gpt2"]
    params = SamplingParams(temperature=1.0, max_tokens=8, ignore_eos=True)
    runs = [LLM(path, num_kv_blocks=32, block_size=4, seed=s).generate(PROMPTS, params) for s in (5, 5, 6)]
    tokens = [[o.token_ids for o in outs] for outs in runs]
    assert tokens[0] == tokens[1] and tokens[0] != tokens[2]


def test_stop_token_ids_min_tokens_and_length(checkpoints):
    path = checkpoints["gpt2"]
    llm = LLM(path, num_kv_blocks=32, block_size=4)
    free = llm.generate([PROMPTS[1]], SamplingParams(max_tokens=8, **GREEDY))[0]
    first = free.token_ids[0]
    stopped = llm.generate([PROMPTS[1]], SamplingParams(max_tokens=8, stop_token_ids=[first], **GREEDY))[0]
    assert stopped.token_ids == [first] and stopped.finish_reason == "stop"
    delayed = llm.generate([PROMPTS[1]], SamplingParams(max_tokens=8, min_tokens=3, stop_token_ids=[first], **GREEDY))[0]
    assert first not in delayed.token_ids[:3] and len(delayed.token_ids) >= 3
    assert free.finish_reason == "length" and len(free.token_ids) == 8


def test_eos_stops_unless_ignored(checkpoints):
    path = checkpoints["llama"]
    llm = LLM(path, num_kv_blocks=32, block_size=4)
    free = llm.generate([PROMPTS[0]], SamplingParams(max_tokens=6, **GREEDY))[0]
    llm.engine.executor.eos_token_ids[:] = [free.token_ids[1]]  # make the model's second token its EOS
    out = llm.generate([PROMPTS[0]], SamplingParams(max_tokens=6, temperature=0.0))[0]
    assert out.token_ids == free.token_ids[:2] and out.finish_reason == "stop"
    ignored = llm.generate([PROMPTS[0]], SamplingParams(max_tokens=6, **GREEDY))[0]
    assert ignored.token_ids == free.token_ids


def test_stop_string_truncates_text(checkpoints):
    path = checkpoints["gpt2"]
    llm = LLM(path, num_kv_blocks=32, block_size=4)
    free = llm.generate("the cat", SamplingParams(max_tokens=8, **GREEDY))[0]
    words = free.text.split(" ")
    assert free.text == llm.tokenizer.decode(free.token_ids, skip_special_tokens=True)
    stop_word = words[2]
    out = llm.generate("the cat", SamplingParams(max_tokens=8, stop=[" " + stop_word], **GREEDY))[0]
    assert out.finish_reason == "stop"
    assert out.text == free.text[: free.text.index(" " + stop_word)]
    assert out.token_ids == free.token_ids[: len(out.token_ids)]


def test_step_api_streams_and_reports_metrics(checkpoints):
    path = checkpoints["llama"]
    engine = Engine(path, num_kv_blocks=32, block_size=4)
    rid = engine.add_request("the dog sees a bird", SamplingParams(max_tokens=5, **GREEDY))
    texts, finished = [], []
    while engine.has_unfinished():
        for out in engine.step():
            texts.append(out.text)
            finished.append(out.finished)
    assert finished == [False] * 4 + [True]
    assert all(texts[i + 1].startswith(texts[i]) for i in range(4))
    m = out.metrics
    assert m.prompt_tokens == 5 and m.generated_tokens == 5 and m.cached_prompt_tokens == 0
    assert 0 < m.ttft <= m.e2e and m.tpot is not None and out.request_id == rid


def test_final_only_requests_output_once_the_same_as_cumulative_ones(checkpoints):
    """A "final_only" request (by its params or add_request's override) gives no output until
    it finishes, and then the one a "cumulative" twin in the same batch ends with; neither the
    override nor LLM.generate changes the caller's params."""
    engine = Engine(checkpoints["llama"], num_kv_blocks=32, block_size=4)
    params = {kind: SamplingParams(max_tokens=5, stop_token_ids=[7], output_kind=kind, **GREEDY)
              for kind in ("cumulative", "final_only")}
    ids = {kind: engine.add_request(PROMPTS[1], p) for kind, p in params.items()}
    ids["override"] = engine.add_request(PROMPTS[1], params["cumulative"], output_kind="final_only")
    with pytest.raises(ValueError, match="output_kind must be one of"):
        engine.add_request(PROMPTS[1], params["cumulative"], output_kind="delta")
    seen = {kind: [] for kind in ids}
    while engine.has_unfinished():
        for out in engine.step():
            seen[next(k for k, rid in ids.items() if rid == out.request_id)].append(out)
    assert len(seen["cumulative"]) > 1 and [o.finished for o in seen["final_only"]] == [True]
    assert [o.finished for o in seen["override"]] == [True] and params["cumulative"].output_kind == "cumulative"
    every, final = seen["cumulative"][-1], seen["final_only"][0]
    assert (final.token_ids, final.text, final.finish_reason) == (every.token_ids, every.text, every.finish_reason)
    assert final.metrics.generated_tokens == every.metrics.generated_tokens and final.metrics.tpot is not None
    shared = SamplingParams(max_tokens=3, **GREEDY)
    outs = LLM(checkpoints["llama"], num_kv_blocks=32, block_size=4).generate([PROMPTS[0], PROMPTS[2]], shared)
    assert shared.output_kind == "cumulative" and all(o.finished for o in outs)


def test_abort_frees_blocks_and_others_continue(checkpoints):
    path = checkpoints["gpt2"]
    engine = Engine(path, num_kv_blocks=32, block_size=4)
    params = SamplingParams(max_tokens=6, **GREEDY)
    keep = engine.add_request(PROMPTS[1], params)
    drop = engine.add_request(PROMPTS[3], params)
    engine.step()
    assert engine.abort_request(drop) and not engine.abort_request(drop)
    outs = []
    while engine.has_unfinished():
        outs += engine.step()
    assert {o.request_id for o in outs} == {keep}
    assert engine.stats()["num_free_kv_blocks"] == 32
    assert outs[-1].token_ids == hf_greedy(path, [PROMPTS[1]], 6)[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_decode_matches_eager(checkpoints):
    path = checkpoints["llama"]
    prompts = PROMPTS * 3  # 12 sequences: a bucket of 16 with padding rows
    params = SamplingParams(max_tokens=12, **GREEDY)
    graphs = LLM(path, device="cuda", dtype="float32", num_kv_blocks=128, block_size=4)
    eager = LLM(path, device="cuda", dtype="float32", num_kv_blocks=128, block_size=4, enforce_eager=True)
    got = [o.token_ids for o in graphs.generate(prompts, params)]
    assert graphs.engine.executor.runner.graphs is not None and graphs.engine.executor.runner.graphs.graphs
    assert got == [o.token_ids for o in eager.generate(prompts, params)]


def test_mixed_steps_on_the_triton_backend_match_hf(checkpoints):
    """A long prompt prefilled in chunks while others decode: the decode rows of the mixed
    steps take the decode kernel, the chunk the paged-prefill kernel."""
    path = checkpoints["llama"]
    long_prompt = [(5 * i) % 100 + 4 for i in range(14)]
    prompts = [PROMPTS[0], long_prompt, PROMPTS[2]]
    llm = LLM(path, kernel_backend="triton", block_size=4, num_kv_blocks=32, max_num_batched_tokens=6)
    runner = llm.engine.executor.runner
    prepare, decodes_per_step = runner.prepare, []

    def recording_prepare(batch, *in_flight):
        inputs = prepare(batch, *in_flight)
        decodes_per_step.append(inputs.meta.num_decodes)
        return inputs

    runner.prepare = recording_prepare
    outs = llm.generate(prompts, SamplingParams(max_tokens=4, **GREEDY))
    assert any(decodes_per_step)  # some steps mixed decode rows with a prompt chunk
    assert [o.token_ids for o in outs] == hf_greedy(path, prompts, 4)
