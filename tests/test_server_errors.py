"""Bad requests get a 4xx in OpenAI's error shape naming the problem, and the server goes on;
an engine failure fails only the request it hit (a 500, or an error event in a stream).

The server runs in-process (uvicorn in a thread) so that a test can inject a failure at the
engine's step() boundary.
"""
import asyncio
import contextlib
import json
import time

import httpx
import pytest
import torch

from engine import Engine
from engine.server.app import build_app
from tests.server_harness import serving_in_process, slowed_steps
from tests.tiny_causal import make_gpt2

MODEL = "tiny-gpt2"
LONG_PROMPT = " ".join(["the cat"] * 100)  # 200 tokens, past the 128-position context


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    engine = Engine(make_gpt2(tmp_path_factory.mktemp("ckpt")), num_kv_blocks=32)
    with serving_in_process(build_app(engine, MODEL)) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            yield http, engine


def completion(**fields):
    return {"model": MODEL, "prompt": "the cat", "max_tokens": 4, **fields}


def chat(**fields):
    return {"model": MODEL, "messages": [{"role": "user", "content": "the cat"}], **fields}


# (endpoint, body, a substring the error message must contain)
BAD_REQUESTS = [
    # wrong types
    ("completions", completion(prompt=5), "'prompt'"),
    ("completions", completion(max_tokens="5"), "'max_tokens'"),
    ("completions", completion(temperature="hot"), "'temperature'"),
    ("completions", completion(n=1.5), "'n'"),
    ("completions", completion(stream="yes"), "'stream'"),
    ("completions", completion(stop=3), "'stop'"),
    ("completions", completion(logprobs=True), "'logprobs'"),
    ("completions", completion(seed=1.5), "'seed'"),
    ("completions", completion(prompt=[1, "two"]), "'prompt'"),
    # out of range
    ("completions", completion(max_tokens=0), "'max_tokens'"),
    ("completions", completion(temperature=-0.5), "'temperature'"),
    ("completions", completion(top_p=0), "'top_p'"),
    ("completions", completion(top_p=1.5), "'top_p'"),
    ("completions", completion(n=0), "'n'"),
    ("completions", completion(n=1000), "'n'"),
    ("completions", completion(logprobs=21), "'logprobs'"),
    ("completions", completion(top_k=-2), "'top_k'"),
    ("completions", completion(min_tokens=9), "min_tokens"),
    ("completions", completion(stop=["the", ""]), "stop strings must not be empty"),
    ("completions", completion(prompt=[1, 9999]), "outside the vocabulary"),
    # unknown fields (OpenAI rejects unrecognized arguments) and fields of the other kind
    ("completions", completion(frequency_penalty=0.5), "unknown field 'frequency_penalty'"),
    ("completions", completion(bogus=1), "unknown field 'bogus'"),
    ("completions", completion(iterations=4), "iterations applies only to a masked LM"),
    ("completions", completion(echo=True, logprobs=1), "echo with logprobs"),
    # model
    ("completions", {"prompt": "the cat"}, "field 'model' is required"),
    ("completions", completion(model="gpt-4"), "model 'gpt-4' is not served"),
    # prompts: empty, beyond the context
    ("completions", completion(prompt=""), "prompt is an empty string"),
    ("completions", completion(prompt=[]), "'prompt'"),
    ("completions", completion(prompt=[[]]), "'prompt'"),
    ("completions", completion(prompt=LONG_PROMPT), "exceeds the model's context"),
    ("completions", completion(max_tokens=500), "exceeds the model's context"),
    # chat
    ("chat/completions", {"model": MODEL}, "field 'messages' is required"),
    ("chat/completions", chat(messages=[]), "'messages'"),
    ("chat/completions", chat(messages=[{"role": "robot", "content": "x"}]), "'messages.0.role'"),
    ("chat/completions", chat(messages=[{"role": "user", "content": 5}]), "'messages.0.content'"),
    ("chat/completions", chat(top_logprobs=2), "top_logprobs needs logprobs"),
    ("chat/completions", chat(), "no chat template"),
]


@pytest.mark.parametrize("endpoint, body, message", BAD_REQUESTS, ids=[m for _, _, m in BAD_REQUESTS])
def test_bad_request_is_a_400_naming_the_problem(served, endpoint, body, message):
    http, _ = served
    response = http.post(f"/v1/{endpoint}", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("content, message", [
    (b"{not json", "not valid JSON"), (b"[1, 2]", "must be a JSON object"), (b"", "must be a JSON object"),
])
def test_a_body_that_is_not_a_json_object_is_a_400(served, content, message):
    http, _ = served
    response = http.post("/v1/completions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_unknown_routes_and_methods_answer_in_the_error_shape(served):
    http, _ = served
    assert http.get("/v1/nothing").json()["error"]["message"] == "Not Found"
    response = http.get("/v1/completions")
    assert response.status_code == 405 and "error" in response.json()


POISON = [40, 41, 42, 43]  # a prompt holding these token ids in a row makes the model fail


@contextlib.contextmanager
def failing_on_poison(engine):
    """The model's forward raises whenever its input holds POISON in a row, as a device
    error caused by one request's input would: the engine must isolate that request."""
    pattern = torch.tensor(POISON)

    def check(module, args):
        windows = args[0].unfold(0, len(POISON), 1) if args[0].numel() >= len(POISON) else args[0][:0, None]
        if (windows == pattern).all(dim=-1).any():
            raise RuntimeError("injected failure: poisoned input")

    handle = engine.loaded.model.register_forward_pre_hook(check)
    try:
        yield
    finally:
        handle.remove()


async def sse_events(http, body) -> list[str]:
    async with http.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        return [line.removeprefix("data: ") async for line in response.aiter_lines() if line.startswith("data: ")]


def test_an_engine_failure_fails_only_its_request(served):
    """Poisoned and healthy requests sent together share steps; the engine isolates the
    failure, the poisoned ones get a 500 (or an error event), the healthy ones their tokens."""
    http, engine = served
    poisoned = completion(prompt=[5, *POISON, 6], max_tokens=8, ignore_eos=True)
    healthy = completion(max_tokens=8, ignore_eos=True)

    async def together():
        async with httpx.AsyncClient(base_url=str(http.base_url), timeout=60) as client:
            return await asyncio.gather(
                client.post("/v1/completions", json=poisoned), sse_events(client, dict(poisoned, stream=True)),
                *(client.post("/v1/completions", json=healthy) for _ in range(3)))

    with failing_on_poison(engine):
        failed, events, *fine = asyncio.run(together())
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert "injected failure" in error["message"] and error["type"] == "server_error"
    assert "injected failure" in json.loads(events[-2])["error"]["message"] and events[-1] == "[DONE]"
    for response in fine:
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 8


def test_a_step_that_raises_fails_the_running_requests_and_the_server_goes_on(served):
    http, engine = served

    def broken_step():
        del engine.step  # fails once, then the engine's own step again
        raise RuntimeError("injected step failure")

    engine.step = broken_step
    response = http.post("/v1/completions", json=completion(max_tokens=8))
    assert response.status_code == 500 and "injected step failure" in response.json()["error"]["message"]
    assert engine.stats()["num_free_kv_blocks"] == engine.stats()["num_kv_blocks"]
    assert http.post("/v1/completions", json=completion()).status_code == 200


def test_a_client_that_gives_up_on_a_whole_response_has_its_request_aborted(served):
    http, engine = served
    with slowed_steps(engine, 0.05):  # 100 tokens take >= 5 s; the client waits 0.5 s
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/completions", json=completion(max_tokens=100, ignore_eos=True), timeout=0.5)
        deadline = time.monotonic() + 10
        while engine.has_unfinished() and time.monotonic() < deadline:
            time.sleep(0.05)
    stats = engine.stats()
    assert not engine.has_unfinished() and stats["num_free_kv_blocks"] == stats["num_kv_blocks"]


def test_the_server_still_serves_after_all_that(served):
    http, _ = served
    assert http.get("/health").json() == {"status": "ok"}
    body = http.post("/v1/completions", json=completion(max_tokens=3, ignore_eos=True)).json()
    assert body["usage"]["completion_tokens"] == 3
