"""store_kv against kernels.reference: rows land in their slots, skipped slots stay untouched."""
import pytest
import torch

import kernels
from benchmarks.kernel_cases import STORE_KV
from kernels import reference

CPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]  # a copy: no tl.dot involved


def _nan_caches(num_blocks, block_size, heads, head_dim, dtype, device):
    shape = (num_blocks, block_size, heads, head_dim)
    return (torch.full(shape, float("nan"), dtype=dtype, device=device) for _ in range(2))


def _slots(num_tokens, num_blocks, block_size, num_skipped, index_dtype, device):
    """Distinct random slots over the whole cache, with `num_skipped` of them set to -1."""
    slots = torch.randperm(num_blocks * block_size)[:num_tokens]
    slots[torch.randperm(num_tokens)[:num_skipped]] = -1
    return slots.to(index_dtype).to(device)


@pytest.mark.parametrize("dtype", CPU_DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("case", STORE_KV.cpu, ids=str)
def test_store_kv_matches_reference(dtype, case, index_dtype, device):
    """Distinct random slots, some -1 (one case skips every token)."""
    num_tokens, heads, head_dim, block_size, num_skipped = case
    num_blocks = 4
    k = torch.randn(num_tokens, heads, head_dim, dtype=dtype, device=device)
    v = torch.randn(num_tokens, heads, head_dim, dtype=dtype, device=device)
    slots = _slots(num_tokens, num_blocks, block_size, num_skipped, index_dtype, device)
    k_cache, v_cache = _nan_caches(num_blocks, block_size, heads, head_dim, dtype, device)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()

    assert kernels.store_kv(k, v, k_cache, v_cache, slots) is None
    reference.store_kv(k, v, k_ref, v_ref, slots)

    torch.testing.assert_close(k_cache, k_ref, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(v_cache, v_ref, rtol=0, atol=0, equal_nan=True)
    written = torch.zeros(num_blocks * block_size, dtype=torch.bool, device=device)
    written[slots[slots >= 0].long()] = True
    assert k_cache.flatten(0, 1)[~written].isnan().all()
    assert v_cache.flatten(0, 1)[~written].isnan().all()
    assert not k_cache.flatten(0, 1)[written].isnan().any()


def test_store_kv_reads_strided_views(device):
    """k and v as views into one fused qkv projection, as the models produce them."""
    tokens, heads, head_dim, block_size = 9, 2, 64, 16
    qkv = torch.randn(tokens, 3 * heads, head_dim, device=device)
    _, k, v = qkv.split(heads, dim=1)
    slots = _slots(tokens, 2, block_size, 2, torch.int32, device)
    k_cache, v_cache = _nan_caches(2, block_size, heads, head_dim, torch.float32, device)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()

    kernels.store_kv(k, v, k_cache, v_cache, slots)
    reference.store_kv(k, v, k_ref, v_ref, slots)

    torch.testing.assert_close(k_cache, k_ref, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(v_cache, v_ref, rtol=0, atol=0, equal_nan=True)


def _args(device):
    k = torch.randn(3, 2, 32, device=device)
    cache = torch.zeros(2, 16, 2, 32, device=device)
    return dict(k=k, v=k.clone(), k_cache=cache, v_cache=cache.clone(),
                slot_mapping=torch.tensor([0, -1, 5], dtype=torch.int32, device=device))


@pytest.mark.parametrize(
    "name, bad",
    [
        ("slot_mapping", lambda a: a["slot_mapping"].float()),
        ("slot_mapping", lambda a: a["slot_mapping"][:2]),
        ("k_cache", lambda a: torch.zeros(2, 16, 2, 48)),
        ("k_cache", lambda a: a["k_cache"].half()),
        ("v", lambda a: a["v"][:, :1]),
        ("v_cache", lambda a: a["v_cache"].to("meta")),
        ("v_cache", lambda a: torch.zeros(2, 16, 32, 2).transpose(2, 3)),  # other strides
    ],
)
def test_store_kv_rejects_bad_arguments(name, bad, device):
    args = _args(device)
    args[name] = bad(args)
    with pytest.raises(ValueError, match=name):
        kernels.store_kv(**args)
