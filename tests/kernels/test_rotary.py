"""Triton rotary embedding against kernels.reference."""
import pytest
import torch

import kernels
from engine.models.rope import rope_cos_sin
from kernels import reference
from tests.kernels.matching import assert_matches, float_dtypes

# (tokens, q heads, kv heads, head_dim): a single token, GQA, odd head counts, D/2 not a power of two.
SHAPES = [(1, 4, 2, 64), (5, 3, 1, 80), (7, 8, 8, 96), (3, 6, 2, 128)]
MAX_POSITIONS = 300


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32], ids=["int64", "int32"])
def test_rotary_embedding(shape, index_dtype, device):
    tokens, hq, hkv, d = shape
    cos, sin = rope_cos_sin(d, MAX_POSITIONS, 10000.0, None, device)
    positions = torch.randint(0, MAX_POSITIONS, (tokens,), device=device, dtype=index_dtype)
    for dtype in float_dtypes(device):
        q = torch.randn(tokens, hq, d, device=device).to(dtype)
        k = torch.randn(tokens, hkv, d, device=device).to(dtype)
        q_before, k_before = q.clone(), k.clone()
        out = kernels.rotary_embedding(q, k, positions, cos, sin)
        assert_matches(out, reference.rotary_embedding(q, k, positions, cos, sin), dtype)
        assert torch.equal(q, q_before) and torch.equal(k, k_before)


def test_views_of_a_fused_qkv_projection(device):
    # q and k sliced out of one [T, (Hq + 2 Hkv) * D] projection: token stride != heads * D.
    tokens, hq, hkv, d = 6, 4, 2, 64
    qkv = torch.randn(tokens, (hq + 2 * hkv) * d, device=device)
    q = qkv[:, : hq * d].view(tokens, hq, d)
    k = qkv[:, hq * d : (hq + hkv) * d].view(tokens, hkv, d)
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 32}
    cos, sin = rope_cos_sin(d, 128, 500000.0, llama3, device)
    positions = torch.tensor([0, 1, 2, 100, 127, 5], device=device)
    out = kernels.rotary_embedding(q, k, positions, cos, sin)
    assert_matches(out, reference.rotary_embedding(q, k, positions, cos, sin), torch.float32)


def test_position_zero_is_identity(device):
    cos, sin = rope_cos_sin(64, 8, 10000.0, None, device)
    q, k = torch.randn(2, 3, 64, device=device), torch.randn(2, 1, 64, device=device)
    q_rot, k_rot = kernels.rotary_embedding(q, k, torch.zeros(2, dtype=torch.int64, device=device), cos, sin)
    assert torch.equal(q_rot, q) and torch.equal(k_rot, k)


@pytest.mark.parametrize(
    "change, name",
    [
        ({"q": torch.ones(3, 32)}, "q"),
        ({"q": torch.ones(3, 4, 7), "k": torch.ones(3, 2, 7)}, "q"),
        ({"k": torch.ones(3, 2, 16)}, "k"),
        ({"k": torch.ones(3, 2, 8, dtype=torch.float16)}, "k"),
        ({"positions": torch.zeros(3)}, "positions"),
        ({"positions": torch.zeros(2, dtype=torch.int64)}, "positions"),
        ({"cos_cache": torch.ones(10, 4, dtype=torch.float16)}, "cos_cache"),
        ({"sin_cache": torch.ones(10, 3)}, "sin_cache"),
    ],
)
def test_bad_arguments_raise(change, name):
    args = {"q": torch.ones(3, 4, 8), "k": torch.ones(3, 2, 8), "positions": torch.zeros(3, dtype=torch.int64),
            "cos_cache": torch.ones(10, 4), "sin_cache": torch.ones(10, 4)}
    args.update(change)
    with pytest.raises(ValueError, match=f"^{name} "):
        kernels.rotary_embedding(**args)
