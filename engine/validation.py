"""Argument checks shared by the parameter classes, the engine config and request intake.

Each check raises TypeError for a wrong type and ValueError for a value out of range, naming
the argument and what is allowed, and returns the value in its canonical form, which the
caller stores: numpy integers become Python ints, numpy floats Python floats, numpy bools
Python bools, and a sequence of ids (list, tuple, range, 1-D numpy array or torch tensor) a
list. A bool is never accepted where a number is meant.

The limits are what the sampler and kernels can represent: per-row parameters travel as
int64 / fp32 tensors, and the KV cache is indexed with int32 block tables and slot maps.

The model checks at the bottom need the loaded model's vocabulary (the rows of its
embedding, which can differ from the tokenizer's size) and are called by the Engine when a
request arrives, before anything is queued:
  check_prompt_ids(ids, vocab_size)              a prompt given as token ids
  check_tokenized_prompt(prompt, ids, vocab_size) the ids the tokenizer made of a str prompt
  check_params_for_model(params, vocab_size, has_tokenizer=..., eos_token_ids=...)
                                                 validated params against the model
"""
import math
from numbers import Integral, Real

import numpy as np
import torch

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
SEED_MODULUS = 2**64  # seeds are reduced mod 2^64, the width engine/seeding.py mixes
FP32_MAX = 3.4028234663852886e38  # the largest finite float32
FP32_MIN_NORMAL = 2.0**-126  # the smallest positive float32 that no GPU flushes to zero


def _type_name(value) -> str:
    return type(value).__name__


def _bounds(low, high) -> str:
    if high is None:
        return f">= {low}"
    if low is None:
        return f"<= {high}"
    return f"in [{low}, {high}]"


def check_int(name, value, low=None, high=None, allow_none=False) -> int | None:
    """An int (Python or numpy, never a bool) in [low, high], as a Python int."""
    if value is None and allow_none:
        return None
    if type(value) is not int:  # the common case skips the slow abstract-class check
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"{name} must be an int, got {_type_name(value)}")
        value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {_bounds(low, high)}, got {value}")
    return value


def check_real(name, value, allow_none=False) -> float | None:
    """A finite real number (int, float, numpy float; never a bool), as a Python float."""
    if value is None and allow_none:
        return None
    plain = type(value) is float or type(value) is int  # skips the slow abstract-class check
    if not plain and (isinstance(value, bool) or not isinstance(value, Real)):
        raise TypeError(f"{name} must be a number, got {_type_name(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        raise ValueError(f"{name} must be finite, got {value}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value}")
    return number


def check_bool(name, value) -> bool:
    """True or False (a numpy bool too); 0 and 1 are refused, so a misplaced number is caught."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {_type_name(value)}")
    return bool(value)


def check_seed(name, value, allow_none=False) -> int | None:
    """Any int, reduced mod 2^64: seed and seed + 2^64 (or -1 and 2^64 - 1) draw the same."""
    value = check_int(name, value, allow_none=allow_none)
    return None if value is None else value % SEED_MODULUS


def check_choice(name, value, choices) -> str:
    """One of the strings `choices`."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {choices}, got {_type_name(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return str(value)


def as_list(name, values) -> list:
    """A list, tuple or range, or a 1-D numpy array / torch tensor, as a list of its items."""
    if isinstance(values, (list, tuple, range)):
        return list(values)
    if isinstance(values, (np.ndarray, torch.Tensor)):
        if values.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {tuple(values.shape)}")
        return values.tolist()
    raise TypeError(f"{name} must be a list of ints, got {_type_name(values)}")


def check_int_list(name, values, low=None, high=None) -> list[int]:
    """A sequence of ints (see as_list), each in [low, high], as a list of Python ints."""
    return [check_int(f"{name} entry", v, low=low, high=high) for v in as_list(name, values)]


def check_token_ids(name, ids, vocab_size) -> list[int]:
    """Token ids as plain ints, each in [0, vocab_size)."""
    values = as_list(name, ids)
    if set(map(type, values)) - {int}:  # plain ints (and arrays' tolist()) skip this
        for t in values:
            if isinstance(t, bool) or not isinstance(t, Integral):
                raise TypeError(f"{name} must be ints, got {_type_name(t)}")
        values = [int(t) for t in values]
    if values and (min(values) < 0 or max(values) >= vocab_size):
        bad = next(t for t in values if not 0 <= t < vocab_size)
        raise ValueError(f"{name}: token id {bad} is outside the vocabulary [0, {vocab_size})")
    return values


# ---- checks against the loaded model, called by the Engine at request intake ----------

def check_prompt_ids(ids, vocab_size) -> list[int]:
    """A prompt given as token ids: non-empty, each id a row of the model's embedding."""
    ids = check_token_ids("prompt token ids", ids, vocab_size)
    if not ids:
        raise ValueError("prompt is an empty list of token ids")
    return ids


def check_tokenized_prompt(prompt, ids, vocab_size) -> list[int]:
    """The ids the checkpoint's tokenizer made of the str `prompt`: at least one, and all
    inside the model's vocabulary (a tokenizer larger than its model is refused here rather
    than failing inside the embedding)."""
    if not ids:
        raise ValueError(f"prompt {prompt!r} tokenizes to no tokens")
    beyond = sorted({int(t) for t in ids if not 0 <= t < vocab_size})
    if beyond:
        raise ValueError(
            f"the tokenizer turns prompt {prompt!r} into token ids {beyond[:5]} outside the model's "
            f"vocabulary [0, {vocab_size}): the checkpoint's tokenizer does not match its model"
        )
    return [int(t) for t in ids]


def check_params_for_model(params, vocab_size, *, has_tokenizer, eos_token_ids=()) -> None:
    """Validated params (a request's `request_copy()`) against the model they will run on;
    raises before anything is queued.

    Every stop token id must be inside the model's vocabulary, stop strings need a tokenizer
    to turn the output into text, and min_tokens must leave some token to draw: the stop ids
    and (unless ignore_eos) the model's `eos_token_ids` are banned until then.
    """
    stop_ids = getattr(params, "stop_token_ids", [])
    for t in stop_ids:
        if t >= vocab_size:
            raise ValueError(f"stop_token_ids: token id {t} is outside the model's vocabulary [0, {vocab_size})")
    if getattr(params, "min_tokens", 0) > 0:
        banned = set(stop_ids) | (set() if params.ignore_eos else set(eos_token_ids))
        if len(banned) >= vocab_size:
            raise ValueError(
                f"min_tokens ({params.min_tokens}) bans the stop and end-of-sequence ids until then, and "
                f"they cover the whole vocabulary of {vocab_size} tokens: nothing could be generated"
            )
    if getattr(params, "stop", None) and not has_tokenizer:
        raise ValueError(
            "stop strings need the checkpoint's tokenizer to produce text, and this checkpoint has "
            "none; use stop_token_ids instead"
        )
