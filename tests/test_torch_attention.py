"""The CPU attention backend against the kernel reference: its rotation bit for bit, its
own-keys attention (in runs of equal length, padded, or neither) to fp rounding.

The backend gathers each step's cos/sin once and reuses them in every layer, with the sign
of rotate-half folded into sin; the result must be the reference's exactly (x1 cos - x2 sin
is x1 cos + x2 (-sin) in IEEE arithmetic), bias and grouped-query heads included.
"""
import pytest
import torch

from engine.attention import AttentionMetadata, Rope
from engine.attention.torch_backend import MIN_RUN_SEQUENCES, TorchAttention, _rotated, make_plan
from kernels import reference


def _tables(positions, half):
    angles = torch.arange(positions, dtype=torch.float32)[:, None] * torch.rand(half)[None, :]
    return angles.cos(), angles.sin()


def _heads(tokens, q_heads, kv_heads, head_dim, dtype, fused):
    """q, k, v: separate tensors, or (fused) views of one [T, (Hq + 2 Hkv) D] projection."""
    if not fused:
        return tuple(torch.randn(tokens, h, head_dim).to(dtype) for h in (q_heads, kv_heads, kv_heads))
    qkv = torch.randn(tokens, (q_heads + 2 * kv_heads) * head_dim).to(dtype)
    parts = qkv.split([q_heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    return tuple(p.view(tokens, -1, head_dim) for p in parts)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_rotation_equals_the_reference_in_every_layer(dtype, with_bias, fused):
    torch.manual_seed(0)
    tokens, q_heads, kv_heads, head_dim = 7, 4, 2, 8
    cos, sin = _tables(32, head_dim // 2)
    positions = torch.tensor([0, 1, 2, 3, 9, 10, 31])
    bias = torch.randn((q_heads + 2 * kv_heads) * head_dim).to(dtype) if with_bias else None
    plan = make_plan(AttentionMetadata("encoder", torch.tensor([0, 4, 7], dtype=torch.int32)), None)
    for _layer in range(2):  # the second layer reuses the first one's gathered tables
        q, k, v = _heads(tokens, q_heads, kv_heads, head_dim, dtype, fused)
        before = [t.clone() for t in (q, k, v)]
        with torch.inference_mode():  # as the engine runs it
            got = _rotated(q, k, v, Rope(positions, cos, sin, bias), plan)
        want = reference.rotary_store_kv(q, k, v, positions, cos, sin, None, None, None, bias)
        for g, w in zip(got, want):
            assert g.dtype == dtype and torch.equal(g, w)
        assert all(torch.equal(t, b) for t, b in zip((q, k, v), before))  # the inputs are untouched


def test_fused_heads_are_not_copied():
    """q, k, v split from one projection are rotated from that buffer: v comes back as a
    view of it. Separate tensors (or heads out of order) are joined by a copy."""
    q, k, v = _heads(5, 4, 2, 8, torch.float32, fused=True)
    with torch.inference_mode():
        plan = make_plan(AttentionMetadata("encoder", torch.tensor([0, 5], dtype=torch.int32)), None)
        cos, sin = _tables(8, 4)
        rope = Rope(torch.arange(5), cos, sin)
        assert _rotated(q, k, v, rope, plan)[2].data_ptr() == v.data_ptr()
        assert _rotated(q, v, k, rope, plan)[2].data_ptr() != k.data_ptr()  # k, v swapped: not in a row
        apart = [t.clone() for t in (q, k, v)]
        assert _rotated(*apart, rope, plan)[2].data_ptr() != apart[2].data_ptr()


def test_other_tables_are_gathered_anew():
    """A model whose layers used different tables must not get the first layer's."""
    torch.manual_seed(1)
    q, k, v = torch.randn(3, 2, 4), torch.randn(3, 1, 4), torch.randn(3, 1, 4)
    positions = torch.tensor([0, 1, 2])
    plan = make_plan(AttentionMetadata("encoder", torch.tensor([0, 3], dtype=torch.int32)), None)
    for cos, sin in (_tables(8, 2), _tables(8, 2)):
        got = _rotated(q, k, v, Rope(positions, cos, sin), plan)
        want = reference.rotary_store_kv(q, k, v, positions, cos, sin, None, None, None)
        assert all(torch.equal(g, w) for g, w in zip(got, want))


def _packed(lengths, q_heads=4, kv_heads=2, head_dim=16, dtype=torch.float32):
    total = sum(lengths)
    q, k, v = (torch.randn(total, h, head_dim).to(dtype) for h in (q_heads, kv_heads, kv_heads))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return q, k, v, cu


RUN = MIN_RUN_SEQUENCES


@pytest.mark.parametrize("mode", ["encoder", "prefill"])
@pytest.mark.parametrize("lengths, grouped", [
    ([3] * RUN + [5] * RUN + [9] * RUN, True),  # three runs of equal length: three calls over slices
    ([5] * RUN + [3] * (RUN + 1) + [9] * (RUN - 1), True),  # runs in any order, of any size
    ([5, 3] * 2 * RUN, False),  # interleaved: more runs than MAX_LENGTH_GROUPS, one padded call
    ([3, 5, 9], False),  # runs of one sequence: one padded call
    ([4], False),
    ([6, 6, 6], False),  # equal lengths need neither groups nor padding
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_own_keys_attention_equals_the_reference(mode, lengths, grouped, dtype):
    """One unpadded call per run of equal length, or one padded call, gives the reference's
    varlen attention, every row in its place."""
    torch.manual_seed(2)
    q, k, v, cu = _packed(lengths, dtype=dtype)
    meta = AttentionMetadata(mode, cu)
    backend = TorchAttention()
    got = backend.encoder(q, k, v, 0.25, meta) if mode == "encoder" else backend.paged(q, k, v, None, None, 0.25, meta)
    assert (meta.plan.groups is not None) == grouped
    want = reference.prefill_attention(q, k, v, cu, 0.25, causal=mode == "prefill")
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), **tol)


def test_a_group_is_each_sequence_attended_alone():
    """Grouped, a sequence's rows are exactly SDPA over that sequence alone (what an HF model
    computes for an unpadded batch)."""
    torch.manual_seed(3)
    lengths = [5] * RUN + [3] * RUN + [7] * RUN
    q, k, v, cu = _packed(lengths, q_heads=2, kv_heads=2)
    meta = AttentionMetadata("encoder", cu)
    got = TorchAttention().encoder(q, k, v, 0.5, meta)
    assert len(meta.plan.groups) == 3
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
        alone = torch.nn.functional.scaled_dot_product_attention(
            *(x[start:end].transpose(0, 1)[None] for x in (q, k, v)), scale=0.5)[0].transpose(0, 1)
        assert torch.equal(got[start:end], alone)
