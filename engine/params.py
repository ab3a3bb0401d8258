"""Per-request generation parameters, validated on construction.

A bad value raises ValueError (or TypeError for a wrong type) naming the field and the
allowed range, before the request reaches the engine. Values are stored in canonical form
(numpy numbers as Python ones, sequences as lists), and `validate()` can be called again
after a field is changed. The Engine takes each request's own copy with `request_copy()`,
which validates again; validate() remembers the values it approved, so params nobody changed
since are checked by identity, field by field, instead of every check running again.

The ranges are what both sampler backends represent identically (per-row fp32 temperature
and top_p, int64 top_k and seeds):
- temperature: 0 (greedy) or a finite float up to the float32 maximum; a value below
  MIN_TEMPERATURE is greedy and stored as 0.0 (logits / T would exceed any useful
  precision, and both backends then take the argmax, lowest index on ties).
- top_p: (0, 1], applied in float32; a value below the smallest normal float32 is raised to
  it, which keeps only the most probable token (and its ties), never an empty nucleus.
- top_k: -1 or 0 keep every token, and so does any k at or above the vocabulary size;
  at most 2^63 - 1 (int64).
- seed: any int, stored mod 2^64 (see engine/validation.py).
- iterations (mask-predict): at most 2^31 - 1, so that the schedule's products of a length
  and a pass count stay far inside int64 (2^63 used to overflow inside a step).
- output_kind (vLLM's name): "cumulative" gives an output at every step (or pass) the request
  runs, "final_only" only the last one, when it finishes. `LLM.generate` asks for the final
  outputs only; the step API's default is every step, for streaming.
"""
import functools
import inspect
import operator
import warnings
from collections import Counter
from dataclasses import dataclass, field, fields

from engine.mask_rules import REMASK_RULES
from engine.validation import (
    FP32_MAX, FP32_MIN_NORMAL, INT32_MAX, INT64_MAX, check_bool, check_choice, check_int,
    check_int_list, check_real, check_seed,
)

OUTPUT_KINDS = ("cumulative", "final_only")
MIN_TEMPERATURE = 1e-6  # the temperature both sampler backends clamp to; below it: greedy
MAX_LOGPROBS = 20


def _sampling_fields(temperature, top_k, top_p, seed) -> tuple[float, int, float, int | None]:
    """(temperature, top_k, top_p, seed), checked and normalised (module docstring)."""
    temperature = check_real("temperature", temperature)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if temperature > FP32_MAX:
        raise ValueError(f"temperature must be <= {FP32_MAX:.6g} (the float32 maximum), got {temperature}")
    if temperature < MIN_TEMPERATURE:
        temperature = 0.0
    top_k = check_int("top_k", top_k, low=-1, high=INT64_MAX)
    top_p = check_real("top_p", top_p)
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p}")
    return temperature, max(top_k, 0), max(top_p, FP32_MIN_NORMAL), check_seed("seed", seed, allow_none=True)


def _stop_strings(stop) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise TypeError(f"stop must be a str or a list of str, got {stop!r}")
    if not all(stop):
        raise ValueError(f"stop strings must be non-empty, got {stop!r}")
    return [str(s) for s in stop]


class _Approved:
    """What the params classes share: validate() records the values it approved (a field
    holding the very object approved is unchanged; a list must hold the very items), and
    `request_copy`. Each class names its list fields in `_lists` (see `_track`). The approval
    is a slot, outside the instance's __dict__, so vars(params) holds the fields alone."""

    __slots__ = ("_approved",)
    _lists: tuple = ()
    _others = None  # operator.attrgetter of the fields that are not lists

    def __post_init__(self):
        self._approved = None
        self.validate()

    def _approve(self) -> None:
        lists = [None if (v := getattr(self, n)) is None else tuple(v) for n in self._lists]
        self._approved = (self._others(self), lists)

    def _unchanged(self) -> bool:
        approved = self._approved
        if approved is None or not all(map(operator.is_, self._others(self), approved[0])):
            return False
        for name, items in zip(self._lists, approved[1]):
            value = getattr(self, name)
            if items is None:
                if value is not None:
                    return False
            elif type(value) is not list or len(value) != len(items) or not all(map(operator.is_, value, items)):
                return False
        return True

    def request_copy(self, output_kind: str | None = None):
        """A validated copy for one request, lists included, so the caller may change or reuse
        this object afterwards without reaching the request; output_kind, when given, replaces
        this one's in the copy. Raises as validate() does."""
        self.validate()
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy._approved = self._approved  # its lists hold the same items (output_kind may differ)
        for name in self._lists:
            if copy.__dict__[name] is not None:
                copy.__dict__[name] = list(copy.__dict__[name])
        if output_kind is not None:
            copy.output_kind = check_choice("output_kind", output_kind, OUTPUT_KINDS)
        return copy


def _track(lists: tuple):
    """Class decorator (over @dataclass): the list fields of an _Approved class."""

    def decorate(cls):
        cls._lists = lists
        cls._others = operator.attrgetter(*(f.name for f in fields(cls) if f.name not in lists))
        return cls

    return decorate


@_track(("stop_token_ids", "stop"))
@dataclass
class SamplingParams(_Approved):
    """Autoregressive decoding of a causal LM.

    temperature 0 is greedy; top_k 0 or -1 disables top-k; top_p 1.0 disables nucleus
    sampling; seed makes the draw reproducible whatever else is in the batch.
    max_tokens >= 1 and 0 <= min_tokens <= max_tokens; stop_token_ids and stop (strings)
    may be None, a list, a tuple (or for ids a 1-D numpy array); logprobs=None returns
    none, k in [0, 20] returns the sampled token's logprob and the top k. output_kind
    "cumulative" returns an output each step, "final_only" one when the request finishes.
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
    output_kind: str = "cumulative"

    def validate(self) -> None:
        """Check every field and store it in canonical form; idempotent (and a no-op when no
        field changed since the last call)."""
        if self._unchanged():
            return
        self.temperature, self.top_k, self.top_p, self.seed = _sampling_fields(
            self.temperature, self.top_k, self.top_p, self.seed)
        self.max_tokens = check_int("max_tokens", self.max_tokens, low=1)
        self.min_tokens = check_int("min_tokens", self.min_tokens, low=0, high=self.max_tokens)
        self.stop = _stop_strings(self.stop)
        ids = [] if self.stop_token_ids is None else self.stop_token_ids
        self.stop_token_ids = check_int_list("stop_token_ids", ids, low=0)
        self.ignore_eos = check_bool("ignore_eos", self.ignore_eos)
        self.logprobs = check_int("logprobs", self.logprobs, low=0, high=MAX_LOGPROBS, allow_none=True)
        self.output_kind = check_choice("output_kind", self.output_kind, OUTPUT_KINDS)
        self._approve()


REMASK_MODES = tuple(REMASK_RULES)  # the names at import, for CLI choices (validation reads the table)
SCHEDULES = ("linear", "cosine")


def renamed_keyword(old: str, new: str):
    """Class decorator (over @dataclass): `old` is a deprecated alias of the field `new` for
    one release. Passing old=... warns and sets `new` (a ValueError if both are passed with
    different values); reading or writing obj.old warns and goes to obj.new. The alias is
    not a field, so dataclasses.replace, fields() and repr only know `new`."""

    def warn(stacklevel):
        warnings.warn(f"{old} is deprecated, use {new}", DeprecationWarning, stacklevel=stacklevel + 1)

    def decorate(cls):
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            if old in kwargs:
                warn(stacklevel=2)
                value = kwargs.pop(old)
                if kwargs.get(new) is not None and kwargs[new] != value:
                    raise ValueError(f"{old} is the deprecated name of {new}; got {new}={kwargs[new]!r} and "
                                     f"{old}={value!r}, pass only {new}")
                kwargs[new] = value
            init(self, *args, **kwargs)

        signature = inspect.signature(init)
        alias = inspect.Parameter(old, inspect.Parameter.KEYWORD_ONLY, default=None)
        __init__.__signature__ = signature.replace(parameters=[*signature.parameters.values(), alias])
        cls.__init__ = __init__

        def read(self):
            warn(stacklevel=2)
            return getattr(self, new)

        def write(self, value):
            warn(stacklevel=2)
            setattr(self, new, value)

        setattr(cls, old, property(read, write, doc=f"Deprecated alias of {new}."))
        return cls

    return decorate


def _length_candidates(candidates) -> list[int] | None:
    if candidates is None:
        return None
    lengths = check_int_list("length_candidates", candidates, low=1)
    if not lengths:
        raise ValueError("length_candidates must list at least one length (or be None)")
    repeated = sorted(n for n, count in Counter(lengths).items() if count > 1)  # linear: lists may be long
    if repeated:
        shown = lengths if len(lengths) <= 16 else f"{len(lengths)} lengths"
        raise ValueError(f"length_candidates must be distinct, got {shown} (repeated: {repeated[:16]})")
    return lengths


@renamed_keyword("block_size", "block_length")
@_track(("length_candidates",))
@dataclass
class MaskPredictParams(_Approved):
    """Mask-predict refinement of `length` masked slots in `iterations` parallel passes.

    Defaults reproduce Mask-Predict (Ghazvininejad et al., 2019): greedy, re-mask the lowest
    confidences on a linear schedule. remask="commit" never re-masks a filled slot (LLaDA);
    "random" re-masks random slots. threshold (Fast-dLLM) fills every masked slot whose
    confidence reaches it, at least one per pass. block_length (LLaDA's name) decodes
    semi-autoregressive blocks of that many slots left to right, the passes split evenly
    between them; `block_size` is its deprecated alias (one release: passing or reading it
    warns, and passing both with different values is a ValueError). length_candidates (distinct
    lengths) decodes several lengths as one batch and returns the best by mean
    log-probability. stop_early ends when a pass changes nothing. temperature, top_k, top_p,
    seed and output_kind ("cumulative": an output each pass) follow the rules of SamplingParams.
    """

    length: int = 16
    iterations: int = 10
    remask: str = "low_confidence"
    schedule: str = "linear"
    threshold: float | None = None
    block_length: int | None = None
    length_candidates: list[int] | None = None
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_early: bool = False
    return_pass_texts: bool = False
    output_kind: str = "cumulative"

    def validate(self) -> None:
        """Check every field and store it in canonical form; idempotent (and a no-op when no
        field changed since the last call)."""
        if self._unchanged():
            return
        self.length = check_int("length", self.length, low=1)
        self.iterations = check_int("iterations", self.iterations, low=1, high=INT32_MAX)
        self.remask = check_choice("remask", self.remask, tuple(REMASK_RULES))
        self.schedule = check_choice("schedule", self.schedule, SCHEDULES)
        self.threshold = check_real("threshold", self.threshold, allow_none=True)
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        self.block_length = check_int("block_length", self.block_length, low=1, allow_none=True)
        self.length_candidates = _length_candidates(self.length_candidates)
        self.temperature, self.top_k, self.top_p, self.seed = _sampling_fields(
            self.temperature, self.top_k, self.top_p, self.seed)
        self.stop_early = check_bool("stop_early", self.stop_early)
        self.return_pass_texts = check_bool("return_pass_texts", self.return_pass_texts)
        self.output_kind = check_choice("output_kind", self.output_kind, OUTPUT_KINDS)
        self._approve()

    @property
    def lengths(self) -> list[int]:
        """The target lengths decoded for this request."""
        return self.length_candidates or [self.length]
