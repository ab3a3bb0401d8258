"""Load: 200 concurrent streaming requests of random lengths, each getting exactly the tokens
it gets alone; then 20 concurrent clients that walk away mid-stream; afterwards every KV block
is free and the server is healthy.

The server runs in-process (uvicorn in a thread) with fewer sequences per step than requests,
so requests also wait for admission. Tokens are compared through their logprobs entries,
which name every token (special ones too). While the walkers run, each engine step is slowed
to 20 ms, so none of their 100-token requests can finish before its client leaves (in the
same process, a client busy with 200 streams could otherwise read its chunks late).
"""
import asyncio
import random
import time

import httpx
import pytest
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from engine import LLM, Engine, SamplingParams
from engine.server.app import build_app
from tests.server_harness import serving_in_process, slowed_steps
from tests.tiny_causal import make_gpt2

MODEL = "tiny-gpt2"
OPTIONS = dict(num_kv_blocks=512, max_num_seqs=64)
NUM_REQUESTS, NUM_DISCONNECTS = 200, 20
TIMEOUT_S = 180
WALKER_STEP_S = 0.02


def random_requests(seed=0):
    """(prompt token ids, body fields, SamplingParams): half greedy, half seeded sampling."""
    rng = random.Random(seed)
    requests = []
    for i in range(NUM_REQUESTS):
        prompt = [rng.randrange(4, 128) for _ in range(rng.randint(1, 16))]
        fields = dict(max_tokens=rng.randint(1, 24))
        if i % 2:
            fields.update(temperature=0.8, top_p=0.9, seed=i)
        else:
            fields.update(temperature=0.0, ignore_eos=True)
        requests.append((prompt, fields, SamplingParams(**fields)))
    return requests


async def stream_tokens(client, prompt, fields) -> tuple[list[str], str]:
    extra = {k: fields[k] for k in ("ignore_eos",) if k in fields}
    plain = {k: v for k, v in fields.items() if k != "ignore_eos"}
    tokens, finish = [], None
    stream = await client.completions.create(model=MODEL, prompt=prompt, stream=True, logprobs=0, extra_body=extra,
                                             **plain)
    async for chunk in stream:
        choice = chunk.choices[0]
        if choice.logprobs is not None:
            tokens += choice.logprobs.tokens
        finish = choice.finish_reason or finish
    return tokens, finish


async def walk_away(client, prompt) -> int:
    """Read two chunks of a long stream, then close the connection."""
    stream = await client.completions.create(model=MODEL, prompt=prompt, stream=True, max_tokens=100, temperature=0,
                                             extra_body={"ignore_eos": True})
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 2:
            break
    await stream.close()
    return seen


def metric_values(url) -> dict:
    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            key = sample.name + "".join(f"[{v}]" for k, v in sorted(sample.labels.items()) if k != "model_name")
            values[key] = sample.value
    return values


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return make_gpt2(tmp_path_factory.mktemp("ckpt"))


def test_concurrent_streams_equal_solo_runs_and_disconnects_free_their_blocks(gpt2):
    requests = random_requests()
    solo = LLM(gpt2, **OPTIONS)
    expected = [solo.generate([prompt], params)[0] for prompt, _, params in requests]
    token_text = solo.tokenizer.convert_ids_to_tokens

    engine = Engine(gpt2, **OPTIONS)

    async def load(url):
        async with AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_S) as client:
            return await asyncio.gather(*(stream_tokens(client, prompt, fields) for prompt, fields, _ in requests))

    async def walkers(url):
        async with AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_S) as client:
            return await asyncio.gather(*(walk_away(client, requests[i][0]) for i in range(NUM_DISCONNECTS)))

    with serving_in_process(build_app(engine, MODEL)) as url:
        streamed = asyncio.run(asyncio.wait_for(load(url), TIMEOUT_S))
        for i, ((tokens, finish), out) in enumerate(zip(streamed, expected)):
            assert tokens == token_text(out.token_ids), f"request {i} differs from its solo run"
            assert finish == out.finish_reason, i

        with slowed_steps(engine, WALKER_STEP_S):
            assert asyncio.run(asyncio.wait_for(walkers(url), TIMEOUT_S)) == [2] * NUM_DISCONNECTS
            deadline = time.monotonic() + 30
            while (values := metric_values(url))["duodecode_kv_blocks_used"] and time.monotonic() < deadline:
                time.sleep(0.1)  # the aborts land at the engine loop's next turn
        assert values["duodecode_kv_blocks_used"] == 0
        assert values["duodecode_num_requests_running"] == values["duodecode_num_requests_waiting"] == 0
        assert values["duodecode_requests_finished_total[abort]"] == NUM_DISCONNECTS
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    stats = engine.stats()
    assert stats["num_free_kv_blocks"] == stats["num_kv_blocks"] and not engine.has_unfinished()
