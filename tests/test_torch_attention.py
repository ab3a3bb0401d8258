"""The CPU attention backend's rotation against the kernel reference, bit for bit.

The backend gathers each step's cos/sin once and reuses them in every layer, with the sign
of rotate-half folded into sin; the result must be the reference's exactly (x1 cos - x2 sin
is x1 cos + x2 (-sin) in IEEE arithmetic), bias and grouped-query heads included.
"""
import pytest
import torch

from engine.attention import AttentionMetadata, Rope
from engine.attention.torch_backend import _rotated, make_plan
from kernels import reference


def _tables(positions, half):
    angles = torch.arange(positions, dtype=torch.float32)[:, None] * torch.rand(half)[None, :]
    return angles.cos(), angles.sin()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_rotation_equals_the_reference_in_every_layer(dtype, with_bias):
    torch.manual_seed(0)
    tokens, q_heads, kv_heads, head_dim = 7, 4, 2, 8
    cos, sin = _tables(32, head_dim // 2)
    positions = torch.tensor([0, 1, 2, 3, 9, 10, 31])
    bias = torch.randn((q_heads + 2 * kv_heads) * head_dim).to(dtype) if with_bias else None
    plan = make_plan(AttentionMetadata("encoder", torch.tensor([0, 4, 7], dtype=torch.int32)), None)
    for _layer in range(2):  # the second layer reuses the first one's gathered tables
        q = torch.randn(tokens, q_heads, head_dim).to(dtype)
        k = torch.randn(tokens, kv_heads, head_dim).to(dtype)
        v = torch.randn(tokens, kv_heads, head_dim).to(dtype)
        got = _rotated(q, k, v, Rope(positions, cos, sin, bias), plan)
        want = reference.rotary_store_kv(q, k, v, positions, cos, sin, None, None, None, bias)
        for g, w in zip(got, want):
            assert g.dtype == dtype and torch.equal(g, w)


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
