"""SamplingParams / MaskPredictParams: every field's type and range, the canonical forms they
are stored in, and the documented edge rules (tiny temperatures, tiny top_p, seeds mod 2^64)."""
import copy
import dataclasses
import pickle
import warnings

import numpy as np
import pytest
import torch

from engine.params import MIN_TEMPERATURE, MaskPredictParams, SamplingParams
from engine.validation import FP32_MAX, FP32_MIN_NORMAL, INT64_MAX

SHARED_BAD = [
    (dict(temperature=-0.1), ValueError, "temperature must be >= 0"),
    (dict(temperature="hot"), TypeError, "temperature must be a number"),
    (dict(temperature=True), TypeError, "temperature must be a number, got bool"),
    (dict(temperature=float("nan")), ValueError, "temperature must be finite"),
    (dict(temperature=float("inf")), ValueError, "temperature must be finite"),
    (dict(temperature=np.float64("nan")), ValueError, "temperature must be finite"),
    (dict(temperature=10**400), ValueError, "temperature must be finite"),
    (dict(temperature=1e39), ValueError, "temperature must be <= 3.40282e"),
    (dict(temperature=np.bool_(True)), TypeError, "temperature must be a number"),
    (dict(temperature=1 + 2j), TypeError, "temperature must be a number"),
    (dict(top_p=0.0), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(top_p=-1e-300), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.0000001), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(top_p=np.float32(1.5)), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(top_p=None), TypeError, "top_p must be a number"),
    (dict(top_k=-2), ValueError, "top_k must be in"),
    (dict(top_k=2**63), ValueError, r"top_k must be in \[-1, 9223372036854775807\]"),
    (dict(top_k=2.5), TypeError, "top_k must be an int"),
    (dict(top_k=3.0), TypeError, "top_k must be an int, got float"),
    (dict(top_k=True), TypeError, "top_k must be an int, got bool"),
    (dict(top_k=np.float32(3)), TypeError, "top_k must be an int"),
    (dict(top_k="5"), TypeError, "top_k must be an int"),
    (dict(seed="x"), TypeError, "seed must be an int"),
    (dict(seed=1.0), TypeError, "seed must be an int"),
    (dict(seed=False), TypeError, "seed must be an int, got bool"),
]


@pytest.mark.parametrize("cls", [SamplingParams, MaskPredictParams])
@pytest.mark.parametrize("kwargs, error, message", SHARED_BAD)
def test_shared_sampling_fields_reject(cls, kwargs, error, message):
    with pytest.raises(error, match=message):
        cls(**kwargs)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(max_tokens=0), ValueError, "max_tokens must be >= 1"),
        (dict(max_tokens=True), TypeError, "max_tokens must be an int, got bool"),
        (dict(max_tokens=16.0), TypeError, "max_tokens must be an int"),
        (dict(max_tokens=None), TypeError, "max_tokens must be an int"),
        (dict(min_tokens=-1), ValueError, "min_tokens must be in"),
        (dict(min_tokens=5, max_tokens=4), ValueError, r"min_tokens must be in \[0, 4\]"),
        (dict(stop=[""]), ValueError, "stop strings must be non-empty"),
        (dict(stop=""), ValueError, "stop strings must be non-empty"),
        (dict(stop=["a", 3]), TypeError, "stop must be a str or a list of str"),
        (dict(stop=b"END"), TypeError, "stop must be a str or a list of str"),
        (dict(stop={"END"}), TypeError, "stop must be a str or a list of str"),
        (dict(stop_token_ids=[-1]), ValueError, "stop_token_ids entry must be >= 0"),
        (dict(stop_token_ids=[1, 2.0]), TypeError, "stop_token_ids entry must be an int, got float"),
        (dict(stop_token_ids=[True]), TypeError, "stop_token_ids entry must be an int, got bool"),
        (dict(stop_token_ids=7), TypeError, "stop_token_ids must be a list of ints, got int"),
        (dict(stop_token_ids="7"), TypeError, "stop_token_ids must be a list of ints, got str"),
        (dict(stop_token_ids={7}), TypeError, "stop_token_ids must be a list of ints, got set"),
        (dict(stop_token_ids=np.array([[1, 2]])), ValueError, r"stop_token_ids must be one-dimensional, got shape \(1, 2\)"),
        (dict(stop_token_ids=np.array([1.0])), TypeError, "stop_token_ids entry must be an int, got float"),
        (dict(ignore_eos=1), TypeError, "ignore_eos must be a bool, got int"),
        (dict(ignore_eos="yes"), TypeError, "ignore_eos must be a bool"),
        (dict(logprobs=-1), ValueError, r"logprobs must be in \[0, 20\]"),
        (dict(logprobs=21), ValueError, r"logprobs must be in \[0, 20\]"),
        (dict(logprobs=True), TypeError, "logprobs must be an int, got bool"),
        (dict(output_kind="delta"), ValueError, r"output_kind must be one of \('cumulative', 'final_only'\)"),
        (dict(output_kind=None), TypeError, "output_kind must be a str"),
    ],
)
def test_sampling_params_reject(kwargs, error, message):
    with pytest.raises(error, match=message):
        SamplingParams(**kwargs)


def test_sampling_params_canonical_forms():
    p = SamplingParams(
        temperature=np.float32(0.5), top_k=np.int64(-1), top_p=np.float64(0.25), seed=np.uint64(7),
        max_tokens=np.int32(8), min_tokens=np.int16(2), stop=("END", np.str_("STOP")),
        stop_token_ids=np.array([3, 4], dtype=np.int64), ignore_eos=np.bool_(True), logprobs=np.int8(3),
    )
    assert (p.temperature, p.top_k, p.top_p, p.seed, p.max_tokens, p.min_tokens, p.logprobs) == (0.5, 0, 0.25, 7, 8, 2, 3)
    assert p.stop == ["END", "STOP"] and p.stop_token_ids == [3, 4] and p.ignore_eos is True
    for value in (p.temperature, p.top_p):
        assert type(value) is float
    for value in (p.top_k, p.seed, p.max_tokens, p.min_tokens, p.logprobs, *p.stop_token_ids):
        assert type(value) is int
    assert type(p.stop[1]) is str
    assert SamplingParams(stop="END").stop == ["END"]
    assert SamplingParams(stop=None, stop_token_ids=None).stop == [] == SamplingParams(stop_token_ids=None).stop_token_ids
    assert SamplingParams(stop_token_ids=torch.tensor([5, 6])).stop_token_ids == [5, 6]
    assert SamplingParams(stop_token_ids=range(2, 4)).stop_token_ids == [2, 3]


def test_tiny_temperatures_are_greedy():
    """Below MIN_TEMPERATURE (where both sampler backends would clamp) sampling is greedy."""
    for t in (1e-300, 5e-324, MIN_TEMPERATURE / 2, np.float32(1e-7)):
        assert SamplingParams(temperature=t).temperature == 0.0
        assert MaskPredictParams(temperature=t).temperature == 0.0
    assert SamplingParams(temperature=MIN_TEMPERATURE).temperature == MIN_TEMPERATURE
    assert SamplingParams(temperature=FP32_MAX).temperature == FP32_MAX
    assert SamplingParams(temperature=2).temperature == 2.0


def test_top_p_below_the_smallest_normal_float32_keeps_a_nucleus():
    for p in (1e-300, 5e-324, 1e-45):
        assert SamplingParams(top_p=p).top_p == FP32_MIN_NORMAL
        assert np.float32(SamplingParams(top_p=p).top_p) > 0
    assert SamplingParams(top_p=0.9).top_p == 0.9


def test_top_k_bounds():
    assert SamplingParams(top_k=INT64_MAX).top_k == INT64_MAX  # above any vocabulary: keeps all
    assert SamplingParams(top_k=-1).top_k == 0 == SamplingParams(top_k=0).top_k


@pytest.mark.parametrize("seed, stored", [
    (0, 0), (2**63, 2**63), (2**64 - 1, 2**64 - 1), (2**64, 0), (2**64 + 5, 5), (-1, 2**64 - 1),
    (-(2**64) - 2, 2**64 - 2), (np.int64(-3), 2**64 - 3), (None, None),
])
def test_seeds_are_reduced_mod_2_64(seed, stored):
    assert SamplingParams(seed=seed).seed == stored
    assert MaskPredictParams(seed=seed).seed == stored


def test_validate_again_after_a_change():
    p = SamplingParams()
    p.top_k = 2**70
    with pytest.raises(ValueError, match="top_k"):
        p.validate()
    p.top_k, p.stop_token_ids = -1, (4, 5)
    p.validate()
    assert p.top_k == 0 and p.stop_token_ids == [4, 5]
    q = MaskPredictParams()
    q.iterations = 0
    with pytest.raises(ValueError, match="iterations"):
        q.validate()


@pytest.mark.parametrize("cls", [SamplingParams, MaskPredictParams])
def test_a_request_copy_is_validated_and_owns_its_lists(cls):
    """request_copy() (what the engine keeps per request) validates only what changed since
    the last validate(), by identity; a changed field, a list changed in place and a value of
    the right number but the wrong type are all caught or made canonical."""
    p = cls(seed=3) if cls is SamplingParams else cls(seed=3, length_candidates=[4, 6])
    copy = p.request_copy("final_only")
    assert copy == dataclasses.replace(p, output_kind="final_only") and p.output_kind == "cumulative"
    listed = "stop_token_ids" if cls is SamplingParams else "length_candidates"
    getattr(p, listed).append(9)  # the caller's list, changed after the copy was taken
    assert 9 not in getattr(copy, listed)
    getattr(p, listed).append(np.int64(11))  # in place: the same list, a numpy item
    assert type(getattr(p.request_copy(), listed)[-1]) is int
    p.seed = np.uint64(5)
    assert type(p.request_copy().seed) is int
    p.top_k = True  # == 1, but a bool
    with pytest.raises(TypeError, match="top_k must be an int, got bool"):
        p.request_copy()
    p.top_k = 0
    getattr(p, listed)[0] = -1
    with pytest.raises(ValueError, match=listed):
        p.request_copy()


def test_the_approval_is_not_a_field():
    p = MaskPredictParams(length=8, seed=1)
    assert MaskPredictParams(**vars(p)) == p and "_approved" not in vars(p)
    for other in (copy.copy(p), pickle.loads(pickle.dumps(p))):
        assert other == p
        other.length = 0
        with pytest.raises(ValueError, match="length must be >= 1"):
            other.validate()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(iterations=0), ValueError, r"iterations must be in \[1, 2147483647\]"),
        (dict(iterations=2**63), ValueError, r"iterations must be in \[1, 2147483647\]"),
        (dict(iterations=2.0), TypeError, "iterations must be an int"),
        (dict(length=0), ValueError, "length must be >= 1"),
        (dict(length=True), TypeError, "length must be an int, got bool"),
        (dict(threshold=0.0), ValueError, r"threshold must be in \(0, 1\]"),
        (dict(threshold=1.01), ValueError, r"threshold must be in \(0, 1\]"),
        (dict(threshold=float("nan")), ValueError, "threshold must be finite"),
        (dict(threshold="0.9"), TypeError, "threshold must be a number"),
        (dict(remask="lowest"), ValueError, "remask must be one of"),
        (dict(remask=None), TypeError, "remask must be a str"),
        (dict(schedule="exp"), ValueError, "schedule must be one of"),
        (dict(schedule=1), TypeError, "schedule must be a str"),
        (dict(block_length=0), ValueError, "block_length must be >= 1"),
        (dict(block_length=4.0), TypeError, "block_length must be an int"),
        (dict(length_candidates=[]), ValueError, "length_candidates must list at least one length"),
        (dict(length_candidates=[4, 0]), ValueError, "length_candidates entry must be >= 1"),
        (dict(length_candidates=[4, 8, 4]), ValueError, r"length_candidates must be distinct.*repeated: \[4\]"),
        (dict(length_candidates=4), TypeError, "length_candidates must be a list of ints, got int"),
        (dict(length_candidates=[4.0]), TypeError, "length_candidates entry must be an int"),
        (dict(stop_early=1), TypeError, "stop_early must be a bool"),
        (dict(return_pass_texts="no"), TypeError, "return_pass_texts must be a bool"),
    ],
)
def test_mask_predict_params_reject(kwargs, error, message):
    with pytest.raises(error, match=message):
        MaskPredictParams(**kwargs)


def test_mask_predict_canonical_forms():
    p = MaskPredictParams(
        length=np.int64(8), iterations=np.int32(4), threshold=np.float32(0.5), block_length=np.int8(4),
        length_candidates=np.array([4, 8]), temperature=np.float64(0.7), stop_early=np.bool_(False),
        remask=np.str_("commit"),
    )
    assert (p.length, p.iterations, p.threshold, p.block_length, p.temperature) == (8, 4, 0.5, 4, 0.7)
    assert p.length_candidates == [4, 8] and p.lengths == [4, 8] and p.remask == "commit"
    assert all(type(v) is int for v in (p.length, p.iterations, p.block_length, *p.length_candidates))
    assert type(p.threshold) is float and p.stop_early is False and type(p.remask) is str
    assert MaskPredictParams(length_candidates=(3, 5)).lengths == [3, 5]


def test_mask_predict_defaults_are_the_paper():
    p = MaskPredictParams()
    assert (p.temperature, p.remask, p.schedule, p.threshold, p.block_length, p.stop_early) == (
        0.0, "low_confidence", "linear", None, None, False,
    )
    assert p.lengths == [p.length]


def test_block_size_is_a_deprecated_alias_of_block_length():
    with pytest.warns(DeprecationWarning, match="block_size is deprecated, use block_length"):
        p = MaskPredictParams(block_size=np.int64(4))
    assert p.block_length == 4 and type(p.block_length) is int
    with pytest.warns(DeprecationWarning, match="block_size is deprecated"):
        assert p.block_size == 4
    with pytest.warns(DeprecationWarning, match="block_size is deprecated"):
        p.block_size = 2
    assert p.block_length == 2
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="block_length=4 and block_size=3"):
        MaskPredictParams(block_length=4, block_size=3)
    with pytest.warns(DeprecationWarning):
        assert MaskPredictParams(block_length=3, block_size=3).block_length == 3
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="block_length must be >= 1"):
        MaskPredictParams(block_size=0)


def test_the_alias_is_not_a_field_and_revalidation_does_not_warn():
    with pytest.warns(DeprecationWarning):
        p = MaskPredictParams(block_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        p.validate()
        p.validate()
        assert dataclasses.replace(p, seed=3).block_length == 4
        assert MaskPredictParams(**vars(p)) == p
        assert "block_size" not in {f.name for f in dataclasses.fields(p)} and "block_size" not in repr(p)
