"""One autoregressive request and the state changes it owns.

WAITING -> RUNNING -> FINISHED; RUNNING -> PREEMPTED (blocks freed) -> RUNNING again, after
its prompt and the tokens it had generated are recomputed (prefilled) from scratch. The
scheduler and block manager move a request between these states through its methods, so
every change of its token list, progress and status happens here.
"""
import enum

from engine.outputs import RequestMetrics
from engine.params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


class Request:
    """Tokens, KV blocks and progress of one request.

    `all_token_ids` is prompt + output; its first `num_computed_tokens` have their
    keys/values in the cache blocks listed in `block_table`. When every token is computed,
    the next step samples a new one. `row` is the request's row in the runner's persistent
    step arrays while it holds blocks (None otherwise).
    """

    def __init__(self, request_id: str, prompt: str | None, prompt_token_ids: list[int],
                 params: SamplingParams, seed: int, arrival_time: float):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = list(prompt_token_ids)  # never changed: outputs share it
        self.all_token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(self.all_token_ids)
        self.params = params
        self.seed = seed
        self.status = RequestStatus.WAITING
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []  # hash chain of the full blocks of the tokens, lazily extended
        self.num_sealed_blocks = 0  # leading blocks of block_table registered in the prefix cache
        self.row: int | None = None
        self.was_admitted = False
        self.metrics = RequestMetrics(arrival_time=arrival_time, prompt_tokens=self.num_prompt_tokens)
        self.logprobs: list[dict[int, float]] | None = [] if params.logprobs is not None else None
        self.text = ""  # decoded output so far (see engine.detokenizer)
        self.detok_prefix_offset = 0  # incremental detokenization window, in output tokens
        self.detok_read_offset = 0

    # ---- views ------------------------------------------------------------------------

    @property
    def output_token_ids(self) -> list[int]:
        return self.all_token_ids[self.num_prompt_tokens:]

    def token_ids(self, start: int, end: int) -> list[int]:
        """Tokens [start, end) of prompt + output."""
        return self.all_token_ids[start:end]

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_generated(self) -> int:
        return len(self.all_token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    # ---- state changes ------------------------------------------------------------------

    def admit(self, num_cached_tokens: int) -> None:
        """Start running with the first `num_cached_tokens` already in the cache (prefix hits)."""
        self.num_computed_tokens = num_cached_tokens
        if not self.was_admitted:  # the prefix hits of the prompt, not of a recompute
            self.metrics.cached_prompt_tokens = num_cached_tokens
            self.was_admitted = True
        self.status = RequestStatus.RUNNING

    def append_token(self, token: int, logprobs: dict | None, now: float) -> None:
        self.all_token_ids.append(token)
        m = self.metrics
        m.generated_tokens += 1
        if m.first_token_time is None:
            m.first_token_time = now
        if logprobs is not None:
            self.logprobs.append(logprobs)

    def append_placeholder(self, index: int) -> None:
        """Async scheduling: the token that the step in flight samples for this request is
        on the device only, held here as -(1 + index), its row among that step's sampled
        tokens. The next step is scheduled around it (the runner reads the token on the
        device); `drop_placeholder` removes it when the real token is known."""
        self.all_token_ids.append(-1 - index)

    def drop_placeholder(self) -> None:
        if self.num_generated and self.all_token_ids[-1] < 0:
            self.all_token_ids.pop()

    def preempt(self) -> None:
        """Back to the queue with nothing computed: its blocks were freed, it recomputes later."""
        self.num_computed_tokens = 0
        self.status = RequestStatus.PREEMPTED

    def finish(self, reason: str, now: float, error: str | None = None) -> None:
        self.status = RequestStatus.FINISHED
        self.finish_reason = reason
        self.error = error
        self.metrics.finished_time = now

    def __repr__(self):
        return (f"Request({self.request_id!r}, {self.status.value}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})")
