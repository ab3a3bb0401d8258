"""Per-request generation parameters, validated on construction.

A bad value raises ValueError (or TypeError for a wrong type) naming the field and the
allowed range, before the request reaches the engine.
"""
from dataclasses import dataclass, field

from engine.validation import check_bool, check_int, check_real


def _check_sampling(temperature, top_k, top_p, seed):
    check_real("temperature", temperature)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    check_int("top_k", top_k, low=-1)
    check_real("top_p", top_p)
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    check_int("seed", seed, allow_none=True)


@dataclass
class SamplingParams:
    """Autoregressive decoding of a causal LM.

    temperature 0 is greedy; top_k 0 or -1 disables top-k; top_p 1.0 disables nucleus
    sampling; seed makes the draw reproducible whatever else is in the batch.
    logprobs=None returns none, k >= 0 returns the sampled token's logprob and the top k.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    max_tokens: int = 16
    min_tokens: int = 0
    stop_token_ids: list[int] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None

    def __post_init__(self):
        _check_sampling(self.temperature, self.top_k, self.top_p, self.seed)
        if self.top_k == -1:
            self.top_k = 0
        check_int("max_tokens", self.max_tokens, low=1)
        check_int("min_tokens", self.min_tokens, low=0, high=self.max_tokens)
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not isinstance(self.stop, (list, tuple)) or not all(isinstance(s, str) and s for s in self.stop):
            raise TypeError(f"stop must be a non-empty str or a list of them, got {self.stop!r}")
        self.stop = list(self.stop)
        if not isinstance(self.stop_token_ids, (list, tuple)):
            raise TypeError(f"stop_token_ids must be a list of ints, got {type(self.stop_token_ids).__name__}")
        for t in self.stop_token_ids:
            check_int("stop_token_ids entry", t, low=0)
        self.stop_token_ids = list(self.stop_token_ids)
        check_bool("ignore_eos", self.ignore_eos)
        check_int("logprobs", self.logprobs, low=0, high=20, allow_none=True)


REMASK_MODES = ("low_confidence", "commit", "random")
SCHEDULES = ("linear", "cosine")


@dataclass
class MaskPredictParams:
    """Mask-predict refinement of `length` masked slots in `iterations` parallel passes.

    Defaults reproduce Mask-Predict (Ghazvininejad et al., 2019): greedy, re-mask the lowest
    confidences on a linear schedule. remask="commit" never re-masks a filled slot (LLaDA);
    "random" re-masks random slots. threshold (Fast-dLLM) fills every masked slot whose
    confidence reaches it, at least one per pass. block_size decodes semi-autoregressive
    blocks left to right, the passes split evenly between them. length_candidates decodes
    several lengths as one batch and returns the best by mean log-probability. stop_early
    ends when a pass changes nothing.
    """

    length: int = 16
    iterations: int = 10
    remask: str = "low_confidence"
    schedule: str = "linear"
    threshold: float | None = None
    block_size: int | None = None
    length_candidates: list[int] | None = None
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_early: bool = False
    return_pass_texts: bool = False

    def __post_init__(self):
        check_int("length", self.length, low=1)
        check_int("iterations", self.iterations, low=1)
        if self.remask not in REMASK_MODES:
            raise ValueError(f"remask must be one of {REMASK_MODES}, got {self.remask!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.threshold is not None:
            check_real("threshold", self.threshold)
            if not 0 < self.threshold <= 1:
                raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        check_int("block_size", self.block_size, low=1, allow_none=True)
        if self.length_candidates is not None:
            if not isinstance(self.length_candidates, (list, tuple)) or not self.length_candidates:
                raise TypeError("length_candidates must be a non-empty list of ints")
            for n in self.length_candidates:
                check_int("length_candidates entry", n, low=1)
            self.length_candidates = list(self.length_candidates)
        _check_sampling(self.temperature, self.top_k, self.top_p, self.seed)
        if self.top_k == -1:
            self.top_k = 0
        for name in ("stop_early", "return_pass_texts"):
            check_bool(name, getattr(self, name))

    @property
    def lengths(self) -> list[int]:
        """The target lengths decoded for this request."""
        return self.length_candidates or [self.length]
