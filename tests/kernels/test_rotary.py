"""Triton rotary_embedding and rotary_store_kv against kernels.reference."""
import pytest
import torch

import kernels
from benchmarks.kernel_cases import ROTARY
from engine.models.rope import rope_cos_sin
from kernels import reference
from tests.kernels.matching import assert_matches, float_dtypes

MAX_POSITIONS = 300
BLOCK_SIZE = 16


@pytest.mark.parametrize("shape", ROTARY.cpu, ids=str)
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


def _fused_inputs(shape, dtype, device, with_bias, with_cache):
    """q, k, v as views of one unbiased qkv projection, its bias, NaN caches and slots with a -1."""
    tokens, hq, hkv, d = shape
    qkv = torch.randn(tokens, (hq + 2 * hkv) * d, device=device).to(dtype)
    q, k, v = (t.view(tokens, -1, d) for t in qkv.split([hq * d, hkv * d, hkv * d], dim=1))
    bias = torch.randn((hq + 2 * hkv) * d, device=device).to(dtype) if with_bias else None
    cos, sin = rope_cos_sin(d, MAX_POSITIONS, 10000.0, None, device)
    positions = torch.randint(0, MAX_POSITIONS, (tokens,), device=device)
    caches = (None, None, None)
    if with_cache:
        num_blocks = tokens // BLOCK_SIZE + 2
        slots = torch.randperm(num_blocks * BLOCK_SIZE, device=device)[:tokens].to(torch.int32)
        slots[tokens // 2] = -1
        cache = torch.full((num_blocks, BLOCK_SIZE, hkv, d), float("nan"), device=device, dtype=dtype)
        caches = (cache, cache.clone(), slots)
    return dict(q=q, k=k, v=v, positions=positions, cos_cache=cos, sin_cache=sin,
                k_cache=caches[0], v_cache=caches[1], slot_mapping=caches[2], bias=bias)


def _copy(args):
    """The same arguments with caches of their own (the kernels write into them)."""
    return {name: t.clone() if name in ("k_cache", "v_cache") and t is not None else t for name, t in args.items()}


def _composed(args):
    """The same step through the separate reference ops: bias add, rotary_embedding, store_kv."""
    q, k, v, bias = args["q"], args["k"], args["v"], args["bias"]
    if bias is not None:
        bq, bk, bv = bias.split([q[0].numel(), k[0].numel(), v[0].numel()])
        q, k, v = ((x.float() + b.float().view(x.shape[1:])).to(x.dtype) for x, b in ((q, bq), (k, bk), (v, bv)))
    q, k = reference.rotary_embedding(q, k, args["positions"], args["cos_cache"], args["sin_cache"])
    if args["k_cache"] is not None:
        reference.store_kv(k, v, args["k_cache"], args["v_cache"], args["slot_mapping"])
    return q, k, v


@pytest.mark.parametrize("shape", ROTARY.cpu, ids=str)
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("with_cache", [False, True], ids=["nocache", "cache"])
def test_rotary_store_kv_matches_reference(shape, with_bias, with_cache, device):
    for dtype in float_dtypes(device):
        args = _fused_inputs(shape, dtype, device, with_bias, with_cache)
        ours, ref = _copy(args), _copy(args)
        out = kernels.rotary_store_kv(**ours)
        expected = reference.rotary_store_kv(**ref)
        assert_matches(tuple(out), tuple(expected), dtype)
        if with_cache:
            # Rows land in their slots (the -1 token nowhere); every other row stays NaN.
            for name in ("k_cache", "v_cache"):
                torch.testing.assert_close(ours[name], ref[name], equal_nan=True,
                                           rtol=2e-2 if dtype != torch.float32 else 1e-5, atol=2e-2)
            written = torch.zeros(ours["k_cache"].shape[:2].numel(), dtype=torch.bool, device=device)
            slots = args["slot_mapping"]
            written[slots[slots >= 0].long()] = True
            assert ours["k_cache"].flatten(0, 1)[~written].isnan().all()
            assert not ours["v_cache"].flatten(0, 1)[written].isnan().any()


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_rotary_store_kv_is_the_composition_of_the_separate_ops(with_bias, device):
    """The twin equals bias add + rotary_embedding + store_kv bit for bit; the kernel within rounding."""
    args = _fused_inputs((9, 6, 2, 32), torch.float16, device, with_bias, True)
    twin, composed, ours = _copy(args), _copy(args), _copy(args)
    expected = _composed(composed)
    for out, caches in ((reference.rotary_store_kv(**twin), twin), (kernels.rotary_store_kv(**ours), ours)):
        exact = caches is twin
        tol = dict(rtol=0, atol=0) if exact else dict(rtol=2e-3, atol=2e-3)
        for o, e in zip(out, expected):
            torch.testing.assert_close(o, e, **tol)
        for name in ("k_cache", "v_cache"):
            torch.testing.assert_close(caches[name], composed[name], equal_nan=True, **tol)


def test_rotary_store_kv_outputs_are_one_buffer(device):
    args = _fused_inputs((4, 4, 2, 16), torch.float32, device, False, False)
    q, k, v = kernels.rotary_store_kv(**args)
    assert q.shape == (4, 4, 16) and k.shape == v.shape == (4, 2, 16)
    assert k.data_ptr() == q.data_ptr() + 4 * 16 * q.element_size()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: {"bias": a["bias"][:-1]}, "bias"),
        (lambda a: {"bias": a["bias"].long()}, "bias"),
        (lambda a: {"v": a["v"][:, :1]}, "v"),
        (lambda a: {"v_cache": None}, "together"),
        (lambda a: {"slot_mapping": a["slot_mapping"][:2]}, "slot_mapping"),
        (lambda a: {"k_cache": a["k_cache"].half()}, "k_cache"),
        (lambda a: {"v_cache": a["v_cache"].transpose(2, 3).contiguous().transpose(2, 3)}, "strides"),
    ],
)
def test_rotary_store_kv_rejects_bad_arguments(change, message, device):
    args = _fused_inputs((4, 4, 2, 16), torch.float32, device, True, True)
    args.update(change(args))
    with pytest.raises(ValueError, match=message):
        kernels.rotary_store_kv(**args)
