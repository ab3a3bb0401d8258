"""`python -m engine serve` driven with the `openai` client: outputs equal LLM.generate's.

One server per model kind, started as a subprocess on a free 127.0.0.1 port (a tiny GPT-2 with
a chat template, a tiny BERT); the in-process LLM with the same options is the reference.
"""
import argparse
import contextlib
import dataclasses

import httpx
import pytest
from openai import BadRequestError, OpenAI
from prometheus_client.parser import text_string_to_metric_families

from engine import LLM, MaskPredictParams, SamplingParams
from engine.__main__ import build_parser, main
from tests.server_harness import add_chat_template, running_server
from tests.tiny_causal import make_gpt2
from tests.tiny_masked import make_masked_lm

CAUSAL_OPTIONS = ("--num-kv-blocks", "64")
GREEDY = dict(temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return add_chat_template(make_gpt2(tmp_path_factory.mktemp("ckpt")))


@contextlib.contextmanager
def served_with_client(model, *flags, log_dir):
    """(the server process, an OpenAI client of it); the process is checked gone afterwards."""
    with running_server(model, *flags, log_dir=log_dir) as server:
        with OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
            yield server, client
    assert server.is_gone(), "the server process or its port outlived the test"


@pytest.fixture(scope="module")
def causal(gpt2, tmp_path_factory):
    with served_with_client(gpt2, *CAUSAL_OPTIONS, log_dir=tmp_path_factory.mktemp("logs")) as served:
        yield served


@pytest.fixture(scope="module")
def causal_server(causal):
    return causal[0]


@pytest.fixture(scope="module")
def client(causal):
    return causal[1]


@pytest.fixture(scope="module")
def llm(gpt2):
    return LLM(gpt2, num_kv_blocks=64)


def stream_text(chunks) -> dict[int, str]:
    texts = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    return texts


def test_health_and_models(causal_server, client, gpt2):
    assert httpx.get(f"{causal_server.url}/health").json() == {"status": "ok"}
    (model,) = client.models.list().data
    assert model.id == gpt2 and model.max_model_len == 128


def test_greedy_completion_equals_generate_whole_and_streamed(client, llm, gpt2):
    prompts = ["the cat", "a big dog sees the"]
    expected = llm.generate(prompts, SamplingParams(max_tokens=12, **GREEDY))
    whole = client.completions.create(model=gpt2, prompt=prompts, max_tokens=12, temperature=0,
                                      extra_body={"ignore_eos": True})
    assert [c.text for c in whole.choices] == [o.text for o in expected]
    assert [c.finish_reason for c in whole.choices] == ["length", "length"]
    assert whole.usage.completion_tokens == 24
    assert whole.usage.prompt_tokens == sum(len(o.prompt_token_ids) for o in expected)
    chunks = list(client.completions.create(model=gpt2, prompt=prompts, max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    assert stream_text(chunks) == {0: expected[0].text, 1: expected[1].text}
    assert chunks[-1].usage.completion_tokens == 24 and not chunks[-1].choices


def test_token_id_prompts_logprobs_and_sampled_choices(client, llm, gpt2):
    prompt = [5, 6, 7, 8]
    expected = llm.generate([prompt], SamplingParams(max_tokens=6, logprobs=2, **GREEDY))[0]
    got = client.completions.create(model=gpt2, prompt=prompt, max_tokens=6, temperature=0, logprobs=2,
                                    extra_body={"ignore_eos": True}).choices[0]
    token_texts = [llm.tokenizer.decode([t]) for t in expected.token_ids]
    assert got.logprobs.tokens == token_texts
    assert got.logprobs.token_logprobs == pytest.approx([lp[t] for t, lp in zip(expected.token_ids, expected.logprobs)],
                                                       abs=1e-5)
    assert all(len(top) in (2, 3) for top in got.logprobs.top_logprobs)
    # n seeded choices: choice i draws with seed + i, exactly as the engine would alone
    sampled = client.completions.create(model=gpt2, prompt="the cat", n=3, seed=7, max_tokens=8, temperature=0.9,
                                        top_p=0.95, extra_body={"top_k": 20, "ignore_eos": True})
    for choice in sampled.choices:
        params = SamplingParams(temperature=0.9, top_p=0.95, top_k=20, seed=7 + choice.index, max_tokens=8,
                                ignore_eos=True)
        assert choice.text == llm.generate("the cat", params)[0].text


def test_stop_echo_and_min_tokens(client, llm, gpt2):
    full = llm.generate("the cat", SamplingParams(max_tokens=10, **GREEDY))[0].text
    stop = full.split()[3]
    expected = llm.generate("the cat", SamplingParams(max_tokens=10, stop=[stop], **GREEDY))[0]
    got = client.completions.create(model=gpt2, prompt="the cat", max_tokens=10, temperature=0, stop=stop, echo=True,
                                    extra_body={"ignore_eos": True}).choices[0]
    assert got.text == "the cat" + expected.text and got.finish_reason == "stop"
    streamed = stream_text(client.completions.create(model=gpt2, prompt="the cat", max_tokens=10, temperature=0,
                                                     stop=[stop], echo=True, stream=True,
                                                     extra_body={"ignore_eos": True}))
    assert streamed == {0: got.text}


def test_chat_uses_the_template_and_equals_generate(client, llm, gpt2):
    messages = [{"role": "system", "content": "a dog"}, {"role": "user", "content": [{"type": "text", "text": "the cat"}]}]
    rendered = llm.tokenizer.apply_chat_template(
        [{"role": "system", "content": "a dog"}, {"role": "user", "content": "the cat"}],
        add_generation_prompt=True, tokenize=False)
    ids = llm.tokenizer.encode(rendered, add_special_tokens=False)
    expected = llm.generate([ids], SamplingParams(max_tokens=8, **GREEDY))[0]
    got = client.chat.completions.create(model=gpt2, messages=messages, max_tokens=8, temperature=0,
                                         extra_body={"ignore_eos": True})
    assert got.choices[0].message.content == expected.text and got.choices[0].message.role == "assistant"
    assert got.usage.prompt_tokens == len(ids)
    chunks = list(client.chat.completions.create(model=gpt2, messages=messages, max_tokens=8, temperature=0,
                                                 stream=True, extra_body={"ignore_eos": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text
    assert chunks[-1].choices[0].finish_reason == "length"
    # without max_tokens a chat may use the rest of the context
    rest = client.chat.completions.create(model=gpt2, messages=messages, temperature=0, extra_body={"ignore_eos": True})
    assert rest.usage.completion_tokens == 128 - len(ids)


def test_chat_logprobs(client, llm, gpt2):
    got = client.chat.completions.create(model=gpt2, messages=[{"role": "user", "content": "the cat"}], max_tokens=4,
                                         temperature=0, logprobs=True, top_logprobs=3).choices[0]
    content = got.logprobs.content
    assert "".join((" " if i else "") + t.token for i, t in enumerate(content)) == got.message.content
    for token in content:
        assert len(token.top_logprobs) == 3 and token.top_logprobs[0].logprob == token.logprob  # greedy: the top one


def test_metrics_count_requests_tokens_and_free_blocks(causal_server, client, gpt2):
    client.completions.create(model=gpt2, prompt="the cat", max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
    samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{causal_server.url}/metrics").text):
        for sample in family.samples:
            samples.setdefault(sample.name, 0.0)
            samples[sample.name] += sample.value
    assert samples["duodecode_num_requests_running"] == 0 and samples["duodecode_num_requests_waiting"] == 0
    assert samples["duodecode_kv_blocks_used"] == 0 and samples["duodecode_kv_blocks_total"] == 64
    assert samples["duodecode_generation_tokens_total"] >= 5
    assert samples["duodecode_time_to_first_token_seconds_count"] >= 1
    assert samples["duodecode_time_per_output_token_seconds_count"] >= 1


# ---- a masked LM ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_masked_lm("bert", str(tmp_path_factory.mktemp("ckpt") / "bert"))


@pytest.fixture(scope="module")
def masked_client(bert, tmp_path_factory):
    with served_with_client(bert, log_dir=tmp_path_factory.mktemp("logs")) as (_, client):
        yield client


def test_masked_completion_equals_generate(masked_client, bert):
    llm = LLM(bert)
    variants = [dict(iterations=4), dict(iterations=6, remask="commit", schedule="cosine"),
                dict(threshold=0.5, temperature=0.7, seed=3), dict(length_candidates=[4, 6], iterations=3)]
    for variant in variants:
        expected = llm.generate("the cat", MaskPredictParams(length=6, **variant))[0]
        got = masked_client.completions.create(model=bert, prompt="the cat", max_tokens=6, extra_body=variant)
        assert got.choices[0].text == expected.text, variant
        assert got.usage.completion_tokens == len(expected.token_ids)


@pytest.mark.skipif("block_length" not in {f.name for f in dataclasses.fields(MaskPredictParams)},
                    reason="MaskPredictParams has no block_length yet (the rename from block_size)")
def test_masked_block_length(masked_client, bert):
    expected = LLM(bert).generate("the cat", MaskPredictParams(length=8, iterations=4, block_length=4))[0]
    got = masked_client.completions.create(model=bert, prompt="the cat", max_tokens=8,
                                           extra_body={"iterations": 4, "block_length": 4})
    assert got.choices[0].text == expected.text


def test_masked_stream_sends_the_text_after_every_pass(masked_client, bert):
    expected = LLM(bert).generate("the cat", MaskPredictParams(length=6, iterations=3, return_pass_texts=True))[0]
    chunks = list(masked_client.completions.create(model=bert, prompt="the cat", max_tokens=6, stream=True,
                                                   extra_body={"iterations": 3}))
    assert [c.choices[0].text for c in chunks] == expected.metrics.pass_texts
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, "length"]


def test_masked_lm_rejects_causal_fields_and_chat(masked_client, bert):
    with pytest.raises(BadRequestError, match="stop applies only to a causal LM"):
        masked_client.completions.create(model=bert, prompt="the cat", stop="x")
    with pytest.raises(BadRequestError, match="no chat template"):
        masked_client.chat.completions.create(model=bert, messages=[{"role": "user", "content": "the cat"}])


# ---- the command line ----------------------------------------------------------------------


def test_serve_takes_the_engine_flags_of_generate_and_its_own():
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices

    def flags(parser, group=None):
        groups = [g for g in parser._action_groups if group is None or g.title == group]
        return {s for g in groups for a in g._group_actions for s in a.option_strings}

    engine_flags = flags(commands["generate"], "engine")
    assert "--num-kv-blocks" in engine_flags and engine_flags <= flags(commands["serve"], "engine")
    assert {"--model", "--host", "--port", "--served-model-name", "--log-level", "--disable-access-log",
            "--debug"} <= flags(commands["serve"])


def test_serve_reports_a_bad_model_or_flag_and_exits(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--port", "http"]) == 2
    assert "--port" in capsys.readouterr().err
