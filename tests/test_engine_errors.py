"""Bad input is rejected before anything runs, with an error naming the problem, and a
rejected request never disturbs the requests in flight."""
import json
import os

import pytest

from engine import LLM, Engine, EngineConfig, MaskPredictParams, SamplingParams
from tests.tiny_causal import make_gpt2, make_llama
from tests.tiny_masked import make_masked_lm

GREEDY = dict(temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return make_gpt2(tmp_path_factory.mktemp("ckpt"))  # 128 positions, vocabulary 128


@pytest.fixture(scope="module")
def engine(gpt2):
    return Engine(gpt2, block_size=4, num_kv_blocks=40)


def run_to_end(engine):
    finished = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = out
    return finished


BAD_REQUESTS = [
    ("", SamplingParams(), ValueError, "empty string"),
    ([], SamplingParams(), ValueError, "empty list"),
    ([3, 128], SamplingParams(), ValueError, r"token id 128 is outside the vocabulary \[0, 128\)"),
    ([3, -1], SamplingParams(), ValueError, "outside the vocabulary"),
    ([3, 4.0], SamplingParams(), TypeError, "token ids must be ints"),
    ([3, True], SamplingParams(), TypeError, "token ids must be ints"),
    (42, SamplingParams(), TypeError, "prompt must be a str or a list of token ids"),
    (b"the cat", SamplingParams(), TypeError, "prompt must be a str"),
    ([5] * 100, SamplingParams(max_tokens=29), ValueError, r"exceeds the model's context of 128"),
    ([5] * 10, SamplingParams(max_tokens=200), ValueError, "max_tokens"),
    ([5] * 10, MaskPredictParams(), TypeError, "MaskPredictParams need a masked LM; GPT2LMHeadModel is a causal LM"),
    ([5] * 10, {"temperature": 0.0}, TypeError, "params must be SamplingParams or MaskPredictParams"),
]


@pytest.mark.parametrize("prompt,params,error,message", BAD_REQUESTS)
def test_bad_request_rejected_without_disturbing_requests_in_flight(gpt2, engine, prompt, params, error, message):
    good = SamplingParams(max_tokens=6, **GREEDY)
    reference = LLM(gpt2, block_size=4, num_kv_blocks=40).generate([[7, 8, 9]], good)[0].token_ids
    rid = engine.add_request([7, 8, 9], good)
    engine.step()
    with pytest.raises(error, match=message):
        engine.add_request(prompt, params)
    finished = run_to_end(engine)
    assert list(finished) == [rid] and finished[rid].token_ids == reference
    assert engine.stats()["num_free_kv_blocks"] == engine.stats()["num_kv_blocks"]


def test_request_bigger_than_the_whole_cache_is_rejected(gpt2):
    small = Engine(gpt2, block_size=4, num_kv_blocks=5)
    with pytest.raises(ValueError, match="needs 6 KV blocks but the cache has 5"):
        small.add_request([5] * 16, SamplingParams(max_tokens=8))
    assert not small.has_unfinished()


def test_duplicate_and_bad_request_ids(engine):
    rid = engine.add_request([5, 6], SamplingParams(max_tokens=2, **GREEDY), request_id="mine")
    with pytest.raises(ValueError, match="request_id 'mine' is already in use"):
        engine.add_request([5, 6], SamplingParams(), request_id="mine")
    with pytest.raises(TypeError, match="request_id must be a str"):
        engine.add_request([5, 6], SamplingParams(), request_id=7)
    assert list(run_to_end(engine)) == [rid]
    assert engine.add_request([5], SamplingParams(max_tokens=1), request_id="mine") == "mine"  # free again
    run_to_end(engine)


def test_str_prompt_without_tokenizer(tmp_path):
    path = make_gpt2(tmp_path)
    for name in os.listdir(path):
        if "token" in name or name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
            os.remove(os.path.join(path, name))
    engine = Engine(path, num_kv_blocks=8)
    with pytest.raises(ValueError, match="str prompt needs a tokenizer"):
        engine.add_request("the cat", SamplingParams())
    assert engine.add_request([4, 5], SamplingParams(max_tokens=1))


@pytest.mark.parametrize("make_params,message", [
    (lambda: SamplingParams(temperature=-0.5), "temperature must be >= 0"),
    (lambda: SamplingParams(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (lambda: SamplingParams(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (lambda: SamplingParams(max_tokens=0), "max_tokens must be >= 1"),
])
def test_bad_sampling_params_fail_on_construction(make_params, message):
    with pytest.raises(ValueError, match=message):
        make_params()


def test_bad_paths_and_architectures(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        LLM(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no config.json"):
        LLM(str(tmp_path))
    path = make_llama(tmp_path)
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    config["architectures"] = ["FalconForCausalLM"]
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match="unsupported architecture.*supported: .*LlamaForCausalLM"):
        LLM(path)


@pytest.mark.parametrize("options,error,message", [
    (dict(block_size=0), ValueError, r"block_size must be in \[1, 2147483647\]"),
    (dict(max_num_batched_tokens=0), ValueError, r"max_num_batched_tokens must be in \[1, 2147483647\]"),
    (dict(max_num_seqs=2.5), TypeError, "max_num_seqs must be an int"),
    (dict(num_kv_blocks=0), ValueError, r"num_kv_blocks must be in \[1, 2147483647\]"),
    (dict(gpu_memory_utilization=1.5), ValueError, r"gpu_memory_utilization must be in \(0, 1\]"),
    (dict(kernel_backend="cuda"), ValueError, "kernel_backend must be one of"),
    (dict(dtype="float64"), ValueError, "dtype must be one of"),
    (dict(device="tpu"), ValueError, "device must be"),
    (dict(enable_prefix_caching="yes"), TypeError, "enable_prefix_caching must be a bool"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(blocksize=4), TypeError, r"unknown engine option\(s\) \['blocksize'\]"),
])
def test_bad_engine_options(options, error, message):
    with pytest.raises(error, match=message):
        EngineConfig.from_kwargs("some/dir", **options)


def test_generate_argument_errors(gpt2):
    llm = LLM(gpt2, block_size=4, num_kv_blocks=40)
    with pytest.raises(ValueError, match="got 1 params for 2 prompts"):
        llm.generate([[4], [5]], [SamplingParams()])
    with pytest.raises(ValueError, match="prompts is empty"):
        llm.generate([])
    with pytest.raises(TypeError, match="prompts must be"):
        llm.generate(None)
    # A bad prompt in the middle leaves nothing of the call queued.
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.generate([[4, 5], [999], [6]], SamplingParams(max_tokens=2))
    assert not llm.engine.has_unfinished()
    outs = llm.generate([[4, 5], [6]], SamplingParams(max_tokens=2, **GREEDY))
    assert [len(o.token_ids) for o in outs] == [2, 2]
    assert len(llm.generate([4, 5, 6], SamplingParams(max_tokens=1))) == 1  # one token-id prompt


def test_masked_lm_routes_to_mask_predict(tmp_path):
    path = make_masked_lm("bert", str(tmp_path / "bert"))
    llm = LLM(path)
    with pytest.raises(TypeError, match="SamplingParams need a causal LM; BertForMaskedLM is a masked LM"):
        llm.generate("the cat", SamplingParams())
    out = llm.generate("the cat", MaskPredictParams(length=4, iterations=2))[0]
    assert out.finished and len(out.token_ids) == 4 and out.metrics.nfe == 2
    assert not llm.engine.has_unfinished()


def test_model_path_may_be_a_path_object(gpt2):
    from pathlib import Path

    llm = LLM(Path(gpt2), block_size=4, num_kv_blocks=40)
    assert llm.engine.config.model == str(gpt2)
    assert len(llm.generate([[4, 5]], SamplingParams(max_tokens=2))[0].token_ids) == 2
