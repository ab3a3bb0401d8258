"""One autoregressive request and its state machine.

WAITING -> RUNNING -> FINISHED; RUNNING -> PREEMPTED (blocks freed) -> RUNNING again, after
its prompt and the tokens it had generated are recomputed (prefilled) from scratch.
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

    The request's tokens are prompt + output; the first `num_computed_tokens` of them have
    their keys/values in the cache blocks listed in `block_table`. When every token is
    computed, the next step samples a new one.
    """

    def __init__(self, request_id: str, prompt: str | None, prompt_token_ids: list[int],
                 params: SamplingParams, seed: int, arrival_time: float):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.params = params
        self.seed = seed
        self.status = RequestStatus.WAITING
        self.finish_reason: str | None = None
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []  # hash chain of the full blocks of the tokens, lazily extended
        self.num_sealed_blocks = 0  # leading blocks of block_table registered in the prefix cache
        self.was_admitted = False
        self.metrics = RequestMetrics(arrival_time=arrival_time, prompt_tokens=len(prompt_token_ids))
        self.logprobs: list[dict[int, float]] | None = [] if params.logprobs is not None else None
        self.text = ""
        self.detok_prefix_offset = 0  # incremental detokenization window, see engine.detokenizer
        self.detok_read_offset = 0

    def token_ids(self, start: int, end: int) -> list[int]:
        """Tokens [start, end) of prompt + output, without copying the whole sequence."""
        p = len(self.prompt_token_ids)
        if start >= p:
            return self.output_token_ids[start - p:end - p]
        if end <= p:
            return self.prompt_token_ids[start:end]
        return self.prompt_token_ids[start:] + self.output_token_ids[:end - p]

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_generated(self) -> int:
        return len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def __repr__(self):
        return (f"Request({self.request_id!r}, {self.status.value}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})")
