"""The request bodies of the OpenAI-compatible endpoints, and their translation to engine params.

Fields follow OpenAI's completions and chat-completions APIs, plus vLLM's extras (`top_k`,
`min_tokens`, `ignore_eos`) and, for a masked LM, the mask-predict fields of
`MaskPredictParams` (`iterations`, `remask`, `schedule`, `threshold`, `block_length`,
`length_candidates`, `stop_early`); `max_tokens` is a masked LM's length.

Validation is strict, as OpenAI's is: a value of the wrong JSON type is rejected, not coerced,
and an unknown field is an error. A field that does not apply to the served model's kind
(`iterations` for a causal LM, `stop` for a masked LM) is an error naming it. Unset fields
take the engine's defaults for the kind: temperature 1 for a causal LM (OpenAI's default),
0 for mask-predict (the paper's).
"""
from dataclasses import fields
from numbers import Integral
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.params import REMASK_MODES, SCHEDULES, MaskPredictParams, SamplingParams

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions, and a masked LM's default length
MAX_CHOICES = 128  # OpenAI's limit on n
MAX_LOGPROBS = 20  # the engine returns at most 20 alternatives per token

PositiveInt = Annotated[int, Field(ge=1)]


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(StrictBody):
    include_usage: bool = False


class GenerationBody(StrictBody):
    """The fields both endpoints share."""

    model: str
    max_tokens: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None  # OpenAI's end-user id: accepted, not used
    # vLLM's extras
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_tokens: Annotated[int, Field(ge=0)] | None = None
    ignore_eos: bool | None = None
    # mask-predict (masked LMs only)
    iterations: PositiveInt | None = None
    remask: Literal[REMASK_MODES] | None = None
    schedule: Literal[SCHEDULES] | None = None
    threshold: Annotated[float, Field(gt=0, le=1)] | None = None
    block_length: PositiveInt | None = None
    length_candidates: Annotated[list[PositiveInt], Field(min_length=1)] | None = None
    stop_early: bool | None = None

    @field_validator("stop")
    @classmethod
    def _stop_strings_not_empty(cls, stop):
        if stop is not None and any(s == "" for s in ([stop] if isinstance(stop, str) else stop)):
            raise ValueError("stop strings must not be empty")
        return stop

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def engine_logprobs(self) -> int | None:
        """How many alternatives per token the engine should return (None: no logprobs)."""
        raise NotImplementedError

    def to_params(self, kind: str, max_tokens: int, choice: int = 0):
        """SamplingParams (causal) or MaskPredictParams (masked) for choice `choice` of n.

        Choice i of a seeded request draws with seed + i, so the n choices differ and each is
        reproducible; a request that is not streamed asks the engine for final outputs only.
        Raises ValueError naming a field that does not apply to `kind`.
        """
        seed = None if self.seed is None else self.seed + choice
        # a response that is not streamed reads only each choice's final output
        shared = dict(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, seed=seed,
                      output_kind="cumulative" if self.stream else "final_only")
        if kind == "causal":
            self._reject_fields(MASKED_ONLY, MaskPredictParams, "a masked LM")
            given = dict(shared, max_tokens=max_tokens, stop=self.stop, min_tokens=self.min_tokens,
                         ignore_eos=self.ignore_eos, logprobs=self.engine_logprobs())
            return SamplingParams(**_set(given))
        self._reject_fields(CAUSAL_ONLY, SamplingParams, "a causal LM")
        given = dict(shared, length=max_tokens, iterations=self.iterations, remask=self.remask,
                     schedule=self.schedule, threshold=self.threshold, block_length=self.block_length,
                     length_candidates=self.length_candidates, stop_early=self.stop_early)
        return MaskPredictParams(**_set(given))

    def _reject_fields(self, names, params_class, kind_name):
        defaults = {f.name: f.default_factory() if callable(f.default_factory) else f.default
                    for f in fields(params_class)}
        for name in names:
            value = self.engine_logprobs() if name == "logprobs" else getattr(self, name)
            if value is not None and value != defaults.get(name):
                raise ValueError(f"{name} applies only to {kind_name}; the served model is not one")


# body fields that only one kind of model understands
MASKED_ONLY = ("iterations", "remask", "schedule", "threshold", "block_length", "length_candidates", "stop_early")
CAUSAL_ONLY = ("stop", "min_tokens", "ignore_eos", "logprobs")


def _set(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None}


class CompletionRequest(GenerationBody):
    """POST /v1/completions. `prompt` is a string, a list of strings, a list of token ids or
    a list of token-id lists; each prompt gets n choices."""

    prompt: Any
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_shape(cls, prompt):
        def is_ids(x):
            return isinstance(x, list) and x and all(isinstance(t, Integral) and not isinstance(t, bool) for t in x)

        if isinstance(prompt, str) or is_ids(prompt):
            return prompt
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) or is_ids(p) for p in prompt):
            return prompt
        raise ValueError("must be a non-empty string, a list of strings, a non-empty list of token ids "
                         "or a list of such lists")

    def prompts(self) -> list:
        """The prompts of this request: each a str or a list of token ids."""
        p = self.prompt
        if isinstance(p, str) or isinstance(p[0], Integral):
            return [p]
        return list(p)

    def engine_logprobs(self) -> int | None:
        return self.logprobs


class TextPart(StrictBody):
    type: Literal["text"]
    text: str


class ChatMessage(StrictBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def as_template_input(self) -> dict:
        """The message as chat templates read it: content as one string (text parts joined)."""
        content = self.content
        if isinstance(content, list):
            content = "\n".join(part.text for part in content)
        message = {"role": self.role, "content": content or ""}
        if self.name is not None:
            message["name"] = self.name
        return message


class ChatCompletionRequest(GenerationBody):
    """POST /v1/chat/completions. Without max_tokens (or max_completion_tokens, its newer
    name), a causal LM may use the rest of its context."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: PositiveInt | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_needs_logprobs(cls, top_logprobs, info):
        if top_logprobs and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs set to true")
        return top_logprobs

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def engine_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None
