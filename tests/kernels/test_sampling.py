"""Triton `sample` against kernels.reference: the same tokens and the right law.

Tokens must be the reference's bit for bit, except in rows where exp rounding can move the
top-p cut (`draws_agree`): there the token must be one the looser cut allows.
"""
import importlib
import math

import pytest
import torch
import triton
import triton.language as tl

import kernels
from benchmarks.gpu_checks.sampling import draws_agree
from benchmarks.kernel_cases import SAMPLING
from kernels import reference

sampling = importlib.import_module("kernels.sampling")

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


def _assert_agree(logits, params, tokens):
    assert tokens.dtype == torch.int64 and tokens.shape == (logits.shape[0],)
    agree = draws_agree(logits, *params, tokens)
    assert agree.all(), (~agree).nonzero().flatten().tolist()


@triton.jit
def _noise_kernel(seeds_ptr, out_ptr, vocab, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + row * vocab + offs, sampling._uniform(tl.load(seeds_ptr + row), offs), mask=offs < vocab)


def test_noise_bits_match_reference(device):
    seeds = torch.tensor([0, 1, -1, 2**62 + 12345, -(2**63), 2**63 - 1, 987654321], device=device)
    for vocab in (1, 37, 1500):
        out = torch.empty(len(seeds), vocab, device=device)
        _noise_kernel[(len(seeds), triton.cdiv(vocab, 512))](seeds, out, vocab, BLOCK=512)
        ref = reference.uniform_noise(seeds, vocab)
        assert torch.equal(out.view(torch.int32), ref.view(torch.int32))
        assert 0 < out.min() and out.max() < 1


@pytest.mark.parametrize("batch,vocab", SAMPLING.cpu, ids=str)
def test_matches_reference_with_mixed_params(batch, vocab, device):
    for dtype in _dtypes(device):
        logits = _logits(batch, vocab, device).to(dtype)
        params = (*_mixed_params(batch, vocab, device), _seeds(batch, device))
        _assert_agree(logits, params, kernels.sample(logits, *params))


@pytest.mark.parametrize("chunk, chunk_block", [(256, 2), (512, 1)], ids=str)
def test_rows_spread_over_chunks_draw_the_same(chunk, chunk_block, device):
    """Several programs per row, as on a GPU with a small batch: partial sums in integers make
    the thresholds, hence the tokens, independent of the chunking (one row stack per program
    keeps the interpreter's program count small)."""
    batch, vocab = 16, 1000
    rows = batch
    logits = _logits(batch, vocab, device)
    params = (*_mixed_params(batch, vocab, device), _seeds(batch, device))
    whole = kernels.sample(logits, *params)
    block = min(sampling.BLOCK, chunk)
    plan = sampling.SamplePlan(rows, chunk, block, min(sampling.SEARCH_BLOCK, block), chunk_block)
    spread = sampling.launch(logits, *params, plan)
    assert torch.equal(spread, whole)
    _assert_agree(logits, params, spread)


def test_int32_top_k_and_strided_logits(device):
    wide = torch.randn(16, 90, device=device)
    logits = wide[:, 3:80]  # rows not contiguous in memory
    temperature = torch.full((16,), 0.9, device=device)
    top_k = torch.arange(16, dtype=torch.int32, device=device)
    top_p = torch.full((16,), 0.8, device=device)
    params = (temperature, top_k, top_p, _seeds(16, device))
    _assert_agree(logits, params, kernels.sample(logits, *params))


def test_greedy_takes_lowest_index_on_ties(device):
    logits = torch.zeros(3, 50, device=device)
    logits[0, [7, 30]] = 2.0
    logits[1, [0, 49]] = 1.0
    logits[2] = float("-inf")
    logits[2, [11, 12]] = -5.0
    zeros = torch.zeros(3, device=device)
    args = (logits, zeros, torch.zeros(3, dtype=torch.long, device=device), zeros + 1, _seeds(3, device))
    assert kernels.sample(*args).tolist() == [7, 0, 11]
    assert reference.sample(*args).tolist() == [7, 0, 11]


def test_top_k_one_is_argmax(device):
    logits = torch.randn(32, 333, device=device)
    temperature = torch.rand(32, device=device) + 0.1
    top_k = torch.ones(32, dtype=torch.long, device=device)
    top_p = torch.rand(32, device=device) * 0.9 + 0.1
    out = kernels.sample(logits, temperature, top_k, top_p, _seeds(32, device))
    assert torch.equal(out, logits.argmax(dim=-1))


@pytest.mark.parametrize("backend", [kernels, reference], ids=["triton", "torch"])
def test_a_nucleus_below_every_token_keeps_the_top_token(backend, device):
    """top_p smaller than any token's mass, 0 included (1e-50 rounds to 0 in fp32), keeps the
    most probable token: never an empty set, never the padding token 0 by default."""
    batch, vocab = 6, 64
    logits = torch.randn(batch, vocab, device=device) * 2
    logits[:, 0] = -10.0  # token 0 (padding in many vocabularies) is the least likely
    top_p = torch.tensor([0.0, 1e-50, 1e-30, 1e-12, 0.0, 1e-7], device=device)
    top_k = torch.tensor([0, 0, 0, 5, 3, 0], device=device)
    temperature = torch.tensor([1.0, 0.7, 2.0, 1.0, 1e-8, 1.0], device=device)
    out = backend.sample(logits, temperature, top_k, top_p, _seeds(batch, device))
    assert torch.equal(out, logits.argmax(dim=-1))
    assert reference.top_k_top_p_mask(logits, temperature, top_k, top_p).sum(dim=-1).min() >= 1


@pytest.mark.parametrize("backend", [kernels, reference], ids=["triton", "torch"])
def test_top_p_ties_at_the_cut_are_kept(backend, device):
    """Two equal top logits: any top_p keeps both, so both get drawn over many seeds."""
    draws, vocab = 64, 20
    logits = torch.full((draws, vocab), -3.0, device=device)
    logits[:, [4, 9]] = 2.0
    params = (torch.ones(draws, device=device), torch.zeros(draws, dtype=torch.long, device=device),
              torch.full((draws,), 0.01, device=device), torch.arange(draws, device=device) * 101)
    out = backend.sample(logits, *params)
    assert set(out.tolist()) == {4, 9}


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


def test_draws_agree_catches_a_wrong_token(device):
    """The tolerance-aware comparison still fails a token outside the allowed set."""
    logits = torch.randn(4, 50, device=device) * 3
    params = (torch.ones(4, device=device), torch.full((4,), 3, device=device), torch.full((4,), 0.5, device=device),
              _seeds(4, device))
    tokens = reference.sample(logits, *params)
    assert draws_agree(logits, *params, tokens).all()
    worst = logits.argmin(dim=-1)
    assert not draws_agree(logits, *params, worst).any()


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


@pytest.mark.skipif(not CUDA, reason="GPU-sized vocabularies need CUDA")
@pytest.mark.parametrize("batch, vocab", SAMPLING.gpu, ids=str)
def test_large_vocab_on_gpu(batch, vocab, device):
    for dtype in (torch.float32, torch.bfloat16):
        logits = (torch.randn(batch, vocab, device=device) * 4).to(dtype)
        params = (*_mixed_params(batch, vocab, device), _seeds(batch, device))
        _assert_agree(logits, params, kernels.sample(logits, *params))
