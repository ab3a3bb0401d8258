"""What the engine returns for a request."""
from dataclasses import dataclass, field

from engine.speculative.metrics import SpeculativeMetrics


@dataclass
class RequestMetrics:
    """Timings in seconds (time.perf_counter clock) and token counts of one request.

    AR: ttft is arrival to first generated token, tpot the mean time between later tokens.
    Mask-predict: nfe counts encoder passes (function evaluations); tokens_per_pass how many
    slots each pass filled; ttft is arrival to the end of the first pass.
    Speculative decoding: `speculative` counts the request's drafted and accepted tokens
    (None until it has drafted).
    """

    arrival_time: float = 0.0
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    nfe: int = 0
    tokens_per_pass: list[int] = field(default_factory=list)
    pass_texts: list[str] | None = None
    speculative: SpeculativeMetrics | None = None  # drafts and acceptance (engine/speculative/metrics.py)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def e2e(self) -> float | None:
        return None if self.finished_time is None else self.finished_time - self.arrival_time

    @property
    def tpot(self) -> float | None:
        if self.finished_time is None or self.first_token_time is None or self.generated_tokens < 2:
            return None
        return (self.finished_time - self.first_token_time) / (self.generated_tokens - 1)


class RequestOutput:
    """A request's state after a step; `finished` outputs are final.

    token_ids holds generated tokens only (AR: new tokens; mask-predict: the N target
    slots); text is their decoding (mask-predict: up to the first end-of-sequence token).
    A request that failed while running finishes with finish_reason "error" and the
    message in `error`; the engine's other requests go on.

    `text` may be given as a str or computed on first read by `detokenize()`: the engine
    decodes text only where someone reads it, not for every running request every step.
    """

    __slots__ = ("request_id", "prompt", "prompt_token_ids", "token_ids", "_text", "_detokenize",
                 "finished", "finish_reason", "metrics", "logprobs", "error")

    def __init__(self, request_id: str, prompt: str | None, prompt_token_ids: list[int],
                 token_ids: list[int], text: str | None = None, finished: bool = False,
                 finish_reason: str | None = None, metrics: RequestMetrics | None = None,
                 logprobs: list[dict[int, float]] | None = None, error: str | None = None,
                 detokenize=None):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.token_ids = token_ids
        self._text, self._detokenize = text, detokenize
        self.finished = finished
        self.finish_reason = finish_reason
        self.metrics = RequestMetrics() if metrics is None else metrics
        self.logprobs = logprobs
        self.error = error

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "" if self._detokenize is None else self._detokenize()
            self._detokenize = None
        return self._text

    def __repr__(self):
        return (f"RequestOutput(request_id={self.request_id!r}, token_ids={self.token_ids!r}, "
                f"text={self.text!r}, finished={self.finished}, finish_reason={self.finish_reason!r}"
                + (f", error={self.error!r})" if self.error else ")"))


class RequestError(RuntimeError):
    """Raised by LLM.generate when a request failed inside the engine; `outputs` holds every
    output of the call (the failed ones with finish_reason "error"), in input order."""

    def __init__(self, message: str, outputs: list[RequestOutput]):
        super().__init__(message)
        self.outputs = outputs
