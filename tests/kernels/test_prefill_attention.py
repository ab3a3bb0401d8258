"""prefill_attention and paged_prefill_attention against kernels.reference.

The interpreter runs one program at a time, so CPU shapes stay tiny: few heads, sequences of
a few dozen tokens (still several 32-row query tiles and 16-key tiles on CPU).
"""
import pytest
import torch

import kernels
from benchmarks.kernel_cases import (
    PAGED_PREFILL, PREFILL, PagedPrefillCase, PrefillCase, cu_seqlens, packed_inputs, paged_prefill_inputs,
)
from kernels import reference

ON_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not ON_CUDA, reason="bf16/fp16 tensor-core path needs CUDA")

# Bounds for outputs stored in each dtype (the math is fp32 in both implementations).
TOL = {
    torch.float32: dict(atol=2e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}


def _check_prefill(lens, num_q_heads, num_kv_heads, head_dim, causal, dtype, device):
    q, k, v, cu = packed_inputs(lens, num_q_heads, num_kv_heads, head_dim, dtype, device)
    scale = head_dim**-0.5
    out = kernels.prefill_attention(q, k, v, cu, scale, causal)
    ref = reference.prefill_attention(q, k, v, cu, scale, causal)
    assert out.dtype == q.dtype and out.shape == q.shape
    torch.testing.assert_close(out, ref, **TOL[dtype])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("case", PREFILL.cpu, ids=PrefillCase.label)
def test_prefill_fp32(case, causal, device):
    # Single sequences of 1 to 70 tokens; ragged batches with an empty and a one-token
    # sequence; GQA; head dims from 8 (below a dot tile's 16) to 96.
    _check_prefill(list(case.lens), case.num_q_heads, case.num_kv_heads, case.head_dim, causal,
                   torch.float32, device)


@pytest.mark.parametrize("causal", [True, False])
def test_fp16(causal, device):
    _check_prefill([3, 40, 1], 4, 2, 64, causal, torch.float16, device)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("case", PREFILL.cpu + PREFILL.gpu, ids=PrefillCase.label)
def test_half_precision_on_gpu(case, causal, dtype, device):
    _check_prefill(list(case.lens), case.num_q_heads, case.num_kv_heads, case.head_dim, causal, dtype, device)


@pytest.mark.parametrize("causal", [True, False])
def test_no_leakage_across_sequences(causal, device):
    lens = [9, 40, 1, 23]
    q, k, v, cu = packed_inputs(lens, 2, 1, 64, torch.float32, device)
    before = kernels.prefill_attention(q, k, v, cu, 0.125, causal)
    rows = slice(9, 49)  # the second sequence
    k[rows] += torch.randn_like(k[rows])
    v[rows] += torch.randn_like(v[rows])
    after = kernels.prefill_attention(q, k, v, cu, 0.125, causal)
    others = torch.ones(sum(lens), dtype=torch.bool, device=device)
    others[rows] = False
    assert torch.equal(before[others], after[others])
    assert not torch.allclose(before[rows], after[rows])


def test_strided_views_of_a_fused_qkv(device):
    # Models split one [T, (Hq + 2 Hkv) * D] projection: q/k/v are views with a wide row stride.
    lens, hq, hkv, d = [30, 7], 4, 2, 64
    qkv = torch.randn(sum(lens), (hq + 2 * hkv) * d, device=device)
    q, k, v = qkv.split([hq * d, hkv * d, hkv * d], dim=1)
    q, k, v = q.view(-1, hq, d), k.view(-1, hkv, d), v.view(-1, hkv, d)
    cu = cu_seqlens(lens, device)
    out = kernels.prefill_attention(q, k, v, cu, 0.125, True)
    torch.testing.assert_close(out, reference.prefill_attention(q, k, v, cu, 0.125, True),
                               **TOL[torch.float32])


def test_head_dim_not_unit_stride(device):
    q, k, v, cu = packed_inputs([9, 20], 2, 1, 64, torch.float32, device)
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    out = kernels.prefill_attention(q, k, v, cu, 0.125, False)
    torch.testing.assert_close(out, reference.prefill_attention(q, k, v, cu, 0.125, False),
                               **TOL[torch.float32])


def test_empty_batch(device):
    q, k, v, cu = packed_inputs([0], 2, 2, 64, torch.float32, device)
    assert kernels.prefill_attention(q, k, v, cu, 0.125, False).shape == (0, 2, 64)


@pytest.mark.parametrize("case", PAGED_PREFILL.cpu, ids=PagedPrefillCase.label)
def test_paged_prefill(case, device):
    args = paged_prefill_inputs(case, torch.float32, device, poison=True)
    out = kernels.paged_prefill_attention(*args, 0.125)
    ref = reference.paged_prefill_attention(*args, 0.125)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])


def test_paged_without_prefix_equals_causal_prefill(device):
    lens = [12, 35]
    q, k_cache, v_cache, block_tables, cu, context_lens = paged_prefill_inputs(
        PagedPrefillCase((0, 0), tuple(lens), 2, 2, 64, 16), torch.float32, device)
    # Read each sequence's rows back out of its blocks as contiguous k/v.
    k = torch.cat([k_cache[block_tables[b].long()].flatten(0, 1)[:n] for b, n in enumerate(lens)])
    v = torch.cat([v_cache[block_tables[b].long()].flatten(0, 1)[:n] for b, n in enumerate(lens)])
    paged = kernels.paged_prefill_attention(q, k_cache, v_cache, block_tables, cu, context_lens,
                                            0.125)
    contiguous = kernels.prefill_attention(q, k, v, cu, 0.125, True)
    torch.testing.assert_close(paged, contiguous, atol=1e-6, rtol=1e-6)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", PAGED_PREFILL.cpu + PAGED_PREFILL.gpu, ids=PagedPrefillCase.label)
def test_paged_prefill_half_precision_on_gpu(case, dtype, device):
    args = paged_prefill_inputs(case, dtype, device, poison=True)
    scale = case.head_dim**-0.5
    out = kernels.paged_prefill_attention(*args, scale)
    torch.testing.assert_close(out, reference.paged_prefill_attention(*args, scale), **TOL[dtype])


def _bad_prefill_calls(device):
    q, k, v, cu = packed_inputs([3, 4], 4, 2, 64, torch.float32, device)
    yield "q", (q[0], k, v, cu, 0.1, True)
    yield "k", (q, k[:, :, :32], v, cu, 0.1, True)
    yield "v", (q, k, v.half(), cu, 0.1, True)
    yield "cu_seqlens", (q, k, v, cu.long(), 0.1, True)
    yield "cu_seqlens", (q, k, v, cu[:1], 0.1, True)
    yield "heads", (q[:, :3], k, v, cu, 0.1, True)
    yield "scale", (q, k, v, cu, -1.0, True)
    yield "causal", (q, k, v, cu, 0.1, 1)


@pytest.mark.parametrize("case", range(8))
def test_prefill_bad_arguments(case, device):
    name, args = list(_bad_prefill_calls(device))[case]
    with pytest.raises(ValueError, match=name):
        kernels.prefill_attention(*args)


def test_paged_prefill_bad_arguments(device):
    q, k_cache, v_cache, block_tables, cu, context_lens = paged_prefill_inputs(
        PagedPrefillCase((4, 0), (2, 3), 4, 2, 64, 16), torch.float32, device)
    bad = {
        "block_tables": (q, k_cache, v_cache, block_tables.long(), cu, context_lens),
        "context_lens": (q, k_cache, v_cache, block_tables, cu, context_lens[:1]),
        "cu_seqlens_q": (q, k_cache, v_cache, block_tables, cu[:2], context_lens),
        "v_cache": (q, k_cache, v_cache[:, :8], block_tables, cu, context_lens),
        "k_cache": (q, k_cache[..., :32], v_cache, block_tables, cu, context_lens),
    }
    for name, args in bad.items():
        with pytest.raises(ValueError, match=name):
            kernels.paged_prefill_attention(*args, 0.1)
