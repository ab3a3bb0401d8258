"""The HTTP endpoints: OpenAI's completions, chat completions and models, plus health and metrics.

Each generation endpoint validates its body (protocol.py), queues prompts x n requests on the
engine loop in one job (tokenization and params run on the engine thread), then either
streams server-sent events (`data: {chunk}` ... `data: [DONE]`) or answers once every
choice is final. A choice the engine failed ends the request: a 500, or in a stream an
error event and then `[DONE]`.
"""
import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from jinja2.exceptions import TemplateError

from engine.server.errors import APIError, error_response, sse_error
from engine.server.generation import Generation, completes_before_disconnect
from engine.server.protocol import DEFAULT_MAX_TOKENS, ChatCompletionRequest, CompletionRequest
from engine.server.responses import ChatFormat, CompletionFormat
from engine.server.state import ServerState

CLIENT_CLOSED = 499  # the status logged for a request whose client left before its answer

router = APIRouter()


def _server(request: Request) -> ServerState:
    return request.app.state.server


@router.get("/health")
async def health(request: Request):
    if not _server(request).loop.healthy:
        return error_response(503, "the engine loop is not running")
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(request: Request):
    body, content_type = _server(request).metrics.exposition()
    return Response(body, media_type=content_type)


@router.get("/v1/models")
async def models(request: Request):
    return {"object": "list", "data": [_server(request).model_card()]}


@router.post("/v1/completions")
async def create_completion(body: CompletionRequest, request: Request):
    server = _server(request)
    server.check_model(body.model)
    if body.echo and body.logprobs is not None:
        raise APIError(400, "echo with logprobs needs the prompt's logprobs, which this engine does not compute",
                       "echo")
    prompts = body.prompts()
    max_tokens = body.max_tokens or DEFAULT_MAX_TOKENS

    def prepare(engine):
        params = [body.to_params(server.kind, max_tokens, choice) for choice in range(body.n)]
        echoes = [_prompt_text(engine, p) for p in prompts] if body.echo else None
        return [(prompt, p) for prompt in prompts for p in params], echoes

    generation = await Generation.start(server.loop, "cmpl", len(prompts) * body.n, prepare)
    fmt = CompletionFormat(generation.response_id, body.model, server.kind, generation.request_ids, len(prompts),
                           server.token_texts, echoes=generation.info)
    return await _respond(request, generation, fmt, body.stream, body.include_usage)


@router.post("/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request):
    server = _server(request)
    server.check_model(body.model)
    if not server.has_chat_template:
        raise APIError(400, f"the tokenizer of {server.model_name} has no chat template, so it cannot chat; "
                            "use /v1/completions with a prompt", "messages")
    messages = [m.as_template_input() for m in body.messages]

    def prepare(engine):
        ids = _render_chat(engine.tokenizer, messages)
        max_tokens = body.requested_max_tokens or server.default_chat_max_tokens(engine, len(ids))
        return [(ids, body.to_params(server.kind, max_tokens, choice)) for choice in range(body.n)], None

    generation = await Generation.start(server.loop, "chatcmpl", body.n, prepare)
    fmt = ChatFormat(generation.response_id, body.model, server.kind, generation.request_ids, 1,
                     server.token_texts, top_logprobs=body.top_logprobs or 0)
    return await _respond(request, generation, fmt, body.stream, body.include_usage)


def _prompt_text(engine, prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    if engine.tokenizer is None:
        raise ValueError("echo of a token-id prompt needs a tokenizer, and this model has none")
    return engine.tokenizer.decode(prompt)


def _render_chat(tokenizer, messages) -> list[int]:
    """The chat template's rendering of the messages (with the assistant's turn opened) as
    token ids; the template writes its own special tokens, so none are added."""
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except TemplateError as e:
        raise ValueError(f"the chat template rejected the messages: {e}") from None
    return tokenizer.encode(text, add_special_tokens=False)


async def _respond(request, generation, fmt, stream: bool, include_usage: bool):
    if stream:
        return StreamingResponse(_events(generation, fmt, include_usage), media_type="text/event-stream")
    try:
        completed = await completes_before_disconnect(request, generation.wait())
    finally:
        generation.close()
    if not completed:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(fmt.whole(generation.final))


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _events(generation, fmt, include_usage: bool):
    """The stream; when the client goes away the task running it is cancelled, and the
    `finally` aborts the choices still running."""
    try:
        for chunk in fmt.opening_chunks():
            yield _sse(chunk)
        async for update in generation.updates():
            if update.finish_reason == "error":
                yield sse_error(500, f"the engine failed on this request: {update.error}")
                break
            chunk = fmt.chunk(update)
            if chunk is not None:
                yield _sse(chunk)
        else:
            if include_usage:
                yield _sse(fmt.usage_chunk())
        yield "data: [DONE]\n\n"
    finally:
        generation.close()
