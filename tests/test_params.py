"""SamplingParams / MaskPredictParams reject bad values on construction, naming the field."""
import pytest

from engine.params import MaskPredictParams, SamplingParams


@pytest.mark.parametrize(
    "kwargs, error, field",
    [
        (dict(temperature=-0.1), ValueError, "temperature"),
        (dict(temperature="hot"), TypeError, "temperature"),
        (dict(temperature=float("nan")), ValueError, "temperature"),
        (dict(top_p=0.0), ValueError, "top_p"),
        (dict(top_p=1.5), ValueError, "top_p"),
        (dict(top_k=-2), ValueError, "top_k"),
        (dict(top_k=2.5), TypeError, "top_k"),
        (dict(max_tokens=0), ValueError, "max_tokens"),
        (dict(max_tokens=True), TypeError, "max_tokens"),
        (dict(min_tokens=5, max_tokens=4), ValueError, "min_tokens"),
        (dict(seed="x"), TypeError, "seed"),
        (dict(stop=[""]), TypeError, "stop"),
        (dict(stop_token_ids=[-1]), ValueError, "stop_token_ids"),
        (dict(logprobs=-1), ValueError, "logprobs"),
    ],
)
def test_sampling_params_reject(kwargs, error, field):
    with pytest.raises(error, match=field):
        SamplingParams(**kwargs)


def test_sampling_params_normalise():
    p = SamplingParams(top_k=-1, stop="END", stop_token_ids=(3, 4))
    assert p.top_k == 0 and p.stop == ["END"] and p.stop_token_ids == [3, 4]


@pytest.mark.parametrize(
    "kwargs, error, field",
    [
        (dict(iterations=0), ValueError, "iterations"),
        (dict(length=0), ValueError, "length"),
        (dict(threshold=0.0), ValueError, "threshold"),
        (dict(threshold=1.01), ValueError, "threshold"),
        (dict(remask="lowest"), ValueError, "remask"),
        (dict(schedule="exp"), ValueError, "schedule"),
        (dict(block_size=0), ValueError, "block_size"),
        (dict(length_candidates=[]), TypeError, "length_candidates"),
        (dict(length_candidates=[4, 0]), ValueError, "length_candidates"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(stop_early=1), TypeError, "stop_early"),
    ],
)
def test_mask_predict_params_reject(kwargs, error, field):
    with pytest.raises(error, match=field):
        MaskPredictParams(**kwargs)


def test_mask_predict_defaults_are_the_paper():
    p = MaskPredictParams()
    assert (p.temperature, p.remask, p.schedule, p.threshold, p.block_size, p.stop_early) == (
        0.0, "low_confidence", "linear", None, None, False,
    )
    assert p.lengths == [p.length]
    assert MaskPredictParams(length_candidates=[3, 5]).lengths == [3, 5]
