"""Triton `confidence_argmax` against kernels.reference."""
import pytest
import torch

import kernels
from kernels import reference


def _dtypes(device):
    if device == "cuda":
        return [torch.float32, torch.float16, torch.bfloat16]
    return [torch.float32, torch.float16]


def _assert_matches(logits):
    token, prob = kernels.confidence_argmax(logits)
    ref_token, ref_prob = reference.confidence_argmax(logits)
    assert token.dtype == torch.int64 and prob.dtype == torch.float32
    assert token.shape == prob.shape == (logits.shape[0],)
    assert torch.equal(token, ref_token)
    # Both sum in fp32, in different orders: a few ulps of the normaliser apart.
    torch.testing.assert_close(prob, ref_prob, rtol=1e-5, atol=0)


# 5000 spans two 4096-wide tiles, so the online max / rescaled sum crosses a tile boundary.
@pytest.mark.parametrize("batch,vocab", [(1, 1), (3, 37), (9, 1000), (4, 5000)], ids=str)
def test_matches_reference(batch, vocab, device):
    for dtype in _dtypes(device):
        _assert_matches((torch.randn(batch, vocab, device=device) * 4).to(dtype))


def test_ties_go_to_the_lowest_index(device):
    logits = torch.randn(4, 5000, device=device)
    logits[0, [10, 11, 4999]] = 9.0
    logits[1, [4200, 4500]] = 9.0  # both in the second tile
    logits[2, [4095, 4096]] = 9.0  # either side of the tile boundary
    logits[3] = 0.5
    _assert_matches(logits)
    assert kernels.confidence_argmax(logits)[0].tolist() == [10, 4200, 4095, 0]


def test_minus_inf_entries(device):
    logits = torch.randn(4, 5000, device=device)
    logits[0, :4096] = float("-inf")  # the whole first tile is forbidden
    logits[1, ::2] = float("-inf")
    logits[2] = float("-inf")
    logits[2, 4999] = -3.0  # a single finite logit: probability 1
    logits[3, 0] = float("-inf")
    _assert_matches(logits)
    token, prob = kernels.confidence_argmax(logits)
    assert token[2].item() == 4999 and prob[2].item() == 1.0


# -3e38 - 3e38 overflows to -inf on purpose (exp gives 0); numpy in the interpreter warns about it.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_large_magnitudes(device):
    logits = torch.randn(3, 300, device=device)
    logits[0] *= 1e30
    logits[1, :150] = 3e38
    logits[1, 150:] = -3e38
    logits[2] = logits[2] * 1e4 + 1e7
    _assert_matches(logits)
    assert kernels.confidence_argmax(logits)[1][1].item() == pytest.approx(1 / 150)


def test_bad_arguments_raise(device):
    for bad in (torch.randn(10, device=device), torch.zeros(2, 5, dtype=torch.long, device=device),
                torch.randn(2, 0, device=device), [[1.0, 2.0]]):
        with pytest.raises(ValueError, match="logits"):
            kernels.confidence_argmax(bad)
