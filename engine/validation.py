"""Argument checks shared by the parameter classes, the engine config and request intake.

Each raises TypeError for a wrong type and ValueError for a value out of range, naming the
argument and what is allowed.
"""
import math
from numbers import Integral, Real


def check_int(name, value, low=None, high=None, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bounds}, got {value}")


def check_real(name, value):
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


def check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def check_token_ids(name, ids, vocab_size) -> list[int]:
    """Token ids as plain ints, each in [0, vocab_size)."""
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, Integral):
            raise TypeError(f"{name} must be ints, got {type(t).__name__}")
        if not 0 <= t < vocab_size:
            raise ValueError(f"{name}: token id {t} is outside the vocabulary [0, {vocab_size})")
    return [int(t) for t in ids]
