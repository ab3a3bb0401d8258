"""Triton `sample` against kernels.reference: the same tokens, bit for bit, and the right law."""
import math

import pytest
import torch

import kernels
from kernels import reference
from kernels.sampling import uniform_noise

CUDA = torch.cuda.is_available()


def _dtypes(device):
    if device == "cuda":
        return [torch.float32, torch.float16, torch.bfloat16]
    return [torch.float32, torch.float16]


def _seeds(batch, device):
    return torch.randint(-(2**63), 2**63 - 1, (batch,), dtype=torch.int64, device=device)


def _logits(batch, vocab, device):
    """Random rows with the awkward cases mixed in: coarse values (ties), -inf, large scale."""
    x = torch.randn(batch, vocab, device=device) * 3
    x[1::4] = (x[1::4] * 2).round() / 2
    x[2::4, : vocab // 3] = float("-inf")
    x[3::4] *= 40
    return x


def _mixed_params(batch, vocab, device):
    """Greedy, plain-temperature, top-k, top-p and combined rows side by side in one batch."""
    pick = lambda choices: torch.tensor(choices, device=device)[torch.randint(len(choices), (batch,), device=device)]
    temperature = pick([0.0, 0.3, 1.0, 1.7, 1e-8]).float()
    top_k = pick([0, 0, 1, 2, 5, vocab - 1, vocab, vocab + 3]).long()
    top_p = pick([1.0, 1.0, 0.95, 0.6, 0.2, 1e-3]).float()
    return temperature, top_k, top_p


def test_noise_bits_match_reference(device):
    seeds = torch.tensor([0, 1, -1, 2**62 + 12345, -(2**63), 2**63 - 1, 987654321], device=device)
    for vocab in (1, 37, 1500):
        out = uniform_noise(seeds, vocab)
        ref = reference.uniform_noise(seeds, vocab)
        assert torch.equal(out.view(torch.int32), ref.view(torch.int32))
        assert 0 < out.min() and out.max() < 1


@pytest.mark.parametrize("batch,vocab", [(1, 1), (48, 37), (64, 1000), (8, 2500)], ids=str)
def test_matches_reference_with_mixed_params(batch, vocab, device):
    for dtype in _dtypes(device):
        logits = _logits(batch, vocab, device).to(dtype)
        temperature, top_k, top_p = _mixed_params(batch, vocab, device)
        seeds = _seeds(batch, device)
        out = kernels.sample(logits, temperature, top_k, top_p, seeds)
        ref = reference.sample(logits, temperature, top_k, top_p, seeds)
        assert out.dtype == torch.int64 and out.shape == (batch,)
        assert torch.equal(out, ref), (out != ref).nonzero().flatten().tolist()


def test_int32_top_k_and_strided_logits(device):
    wide = torch.randn(16, 90, device=device)
    logits = wide[:, 3:80]  # rows not contiguous in memory
    temperature = torch.full((16,), 0.9, device=device)
    top_k = torch.arange(16, dtype=torch.int32, device=device)
    top_p = torch.full((16,), 0.8, device=device)
    seeds = _seeds(16, device)
    out = kernels.sample(logits, temperature, top_k, top_p, seeds)
    assert torch.equal(out, reference.sample(logits, temperature, top_k, top_p, seeds))


def test_greedy_takes_lowest_index_on_ties(device):
    logits = torch.zeros(3, 50, device=device)
    logits[0, [7, 30]] = 2.0
    logits[1, [0, 49]] = 1.0
    logits[2] = float("-inf")
    logits[2, [11, 12]] = -5.0
    zeros = torch.zeros(3, device=device)
    out = kernels.sample(logits, zeros, torch.zeros(3, dtype=torch.long, device=device), zeros + 1, _seeds(3, device))
    assert out.tolist() == [7, 0, 11]


def test_top_k_one_is_argmax(device):
    logits = torch.randn(32, 333, device=device)
    temperature = torch.rand(32, device=device) + 0.1
    top_k = torch.ones(32, dtype=torch.long, device=device)
    top_p = torch.rand(32, device=device) * 0.9 + 0.1
    out = kernels.sample(logits, temperature, top_k, top_p, _seeds(32, device))
    assert torch.equal(out, logits.argmax(dim=-1))


def test_draw_does_not_depend_on_the_rest_of_the_batch(device):
    row = torch.randn(1, 300, device=device)
    params = [torch.tensor([0.8], device=device), torch.tensor([40], device=device),
              torch.tensor([0.9], device=device), torch.tensor([2**40 + 3], device=device)]
    tokens = []
    for batch, position in ((1, 0), (5, 3), (70, 41)):
        logits = torch.randn(batch, 300, device=device) * 5
        temperature, top_k, top_p = _mixed_params(batch, 300, device)
        seeds = _seeds(batch, device)
        for t, p in zip((logits, temperature, top_k, top_p, seeds), (row[0], *(q[0] for q in params))):
            t[position] = p
        tokens.append(kernels.sample(logits, temperature, top_k, top_p, seeds)[position].item())
    assert len(set(tokens)) == 1


def _chi2_quantile(df, z=3.09):
    """Wilson-Hilferty approximation of the chi-square quantile at the normal quantile z (p = 1e-3)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (6, 1.0), (0, 0.7), (8, 0.8)], ids=str)
def test_draws_follow_the_restricted_softmax(top_k, top_p, device):
    draws, vocab, temperature = 4096, 24, 0.8
    logits = torch.randn(1, vocab, device=device) * 1.5
    logits[0, 5] = float("-inf")
    params = (torch.tensor([temperature], device=device), torch.tensor([top_k], device=device),
              torch.tensor([top_p], device=device))
    kept = reference.top_k_top_p_mask(logits, *params)[0]
    expected = torch.softmax((logits[0] / temperature).masked_fill(~kept, float("-inf")), dim=-1)

    batch = [t.expand(draws, *t.shape[1:]).contiguous() for t in (logits, *params)]
    seeds = torch.arange(draws, dtype=torch.int64, device=device) * 7919 + 11
    tokens = kernels.sample(*batch, seeds)

    assert kept[tokens].all(), "a token outside the top-k / top-p support was drawn"
    counts = torch.bincount(tokens, minlength=vocab).double()
    support = kept & (expected * draws >= 5)  # chi-square needs enough expected counts per cell
    pooled_expected = torch.cat([expected[support], expected[~support].sum().view(1)]).double() * draws
    pooled_counts = torch.cat([counts[support], counts[~support].sum().view(1)])
    cells = pooled_expected > 0
    chi2 = ((pooled_counts - pooled_expected)[cells] ** 2 / pooled_expected[cells]).sum().item()
    df = int(cells.sum()) - 1
    assert df >= 1
    assert chi2 < _chi2_quantile(df), f"chi2 {chi2:.1f} with {df} degrees of freedom"


def test_bad_arguments_raise(device):
    logits = torch.randn(4, 10, device=device)
    temperature, top_p = torch.ones(4, device=device), torch.ones(4, device=device)
    top_k, seeds = torch.zeros(4, dtype=torch.long, device=device), _seeds(4, device)
    cases = {
        "logits": (logits[0], temperature, top_k, top_p, seeds),
        "temperature": (logits, temperature.double(), top_k, top_p, seeds),
        "top_k": (logits, temperature, top_k.float(), top_p, seeds),
        "top_p": (logits, temperature, top_k, top_p[:3], seeds),
        "seeds": (logits, temperature, top_k, top_p, seeds.int()),
    }
    for name, args in cases.items():
        with pytest.raises(ValueError, match=name):
            kernels.sample(*args)
    with pytest.raises(ValueError, match="logits"):
        kernels.sample(logits.long(), temperature, top_k, top_p, seeds)
    with pytest.raises(ValueError, match="vocab_size"):
        uniform_noise(seeds, 0)


@pytest.mark.skipif(not CUDA, reason="GPU-sized vocabularies need CUDA")
@pytest.mark.parametrize("vocab", [50257, 151936])
def test_large_vocab_on_gpu(vocab, device):
    for dtype in (torch.float32, torch.bfloat16):
        logits = (torch.randn(64, vocab, device=device) * 4).to(dtype)
        temperature, top_k, top_p = _mixed_params(64, vocab, device)
        seeds = _seeds(64, device)
        out = kernels.sample(logits, temperature, top_k, top_p, seeds)
        assert torch.equal(out, reference.sample(logits, temperature, top_k, top_p, seeds))
