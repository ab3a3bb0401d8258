"""decode_attention against kernels.reference over scattered, NaN-poisoned paged caches."""
import importlib

import pytest
import torch

import kernels
from kernels import reference

# The function first (lazy load), then its module from sys.modules: importing the submodule
# by name before would shadow the function `kernels.decode_attention` with the module.
decode_attention = kernels.decode_attention
num_kv_splits = importlib.import_module("kernels.decode_attention").num_kv_splits

CUDA = torch.cuda.is_available()


def _paged_inputs(context_lens, num_q_heads, num_kv_heads, head_dim, block_size, dtype, device):
    """q and a paged KV cache whose blocks are a random permutation, with one spare block.

    Every cache row outside a sequence's context is NaN and unused table entries point at
    the spare NaN block, so a kernel reading past a context poisons its output.
    """
    batch = len(context_lens)
    blocks_per_seq = [-(-n // block_size) for n in context_lens]
    width = max(max(blocks_per_seq), 1)
    num_blocks = sum(blocks_per_seq) + 1
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype, device=device)
    v_cache = torch.full(shape, float("nan"), dtype=dtype, device=device)
    order = torch.randperm(num_blocks - 1).tolist()
    block_tables = torch.full((batch, width), num_blocks - 1, dtype=torch.int32)
    for b, (n, used) in enumerate(zip(context_lens, blocks_per_seq)):
        block_tables[b, :used] = torch.tensor(order[:used], dtype=torch.int32)
        order = order[used:]
        rows = torch.arange(n)
        blocks, offsets = block_tables[b, rows // block_size].long(), rows % block_size
        k_cache[blocks, offsets] = torch.randn(n, num_kv_heads, head_dim).to(dtype).to(device)
        v_cache[blocks, offsets] = torch.randn(n, num_kv_heads, head_dim).to(dtype).to(device)
    q = torch.randn(batch, num_q_heads, head_dim).to(dtype).to(device)
    lens = torch.tensor(context_lens, dtype=torch.int32, device=device)
    return q, k_cache, v_cache, block_tables.to(device), lens


def _check(context_lens, num_q_heads, num_kv_heads, head_dim, block_size, dtype, device, tol):
    args = _paged_inputs(context_lens, num_q_heads, num_kv_heads, head_dim, block_size, dtype, device)
    scale = head_dim ** -0.5
    out = decode_attention(*args, scale)
    expected = reference.decode_attention(*args, scale)
    assert out.dtype == dtype and out.shape == expected.shape
    torch.testing.assert_close(out.float(), expected.float(), rtol=tol, atol=tol)


# (context_lens, Hq, Hkv, head_dim, block_size): GQA ratios 1, 4 and 8; lengths 1 and
# non-powers of two, mixed in a batch; head_dim 64, 80 and 96; block sizes 16 and 32.
CASES = [
    ([1], 2, 2, 64, 16),
    ([1, 17, 50], 8, 2, 80, 16),
    ([33, 5, 64], 8, 1, 96, 32),
    ([130, 1], 4, 4, 64, 32),
]


@pytest.mark.parametrize("context_lens, hq, hkv, head_dim, block_size", CASES)
def test_decode_attention_fp32(context_lens, hq, hkv, head_dim, block_size, device):
    _check(context_lens, hq, hkv, head_dim, block_size, torch.float32, device, 1e-5)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_decode_attention_16bit(dtype, tol, device):
    """In the interpreter bf16 goes through fp32 dot operands (its bf16 dot is wrong)."""
    _check([9, 40], 8, 2, 64, 16, dtype, device, tol)


def test_decode_attention_long_context_uses_several_splits(device):
    context_lens, hkv = [700, 3], 1
    width = -(-max(context_lens) // 32)
    assert num_kv_splits(len(context_lens), hkv, width * 32, device) > 1
    _check(context_lens, 4, hkv, 64, 32, torch.float32, device, 1e-5)


def test_decode_attention_empty_context_gives_zeros(device):
    """A padding row with no context attends to nothing: zeros, as the reference."""
    _check([0, 20], 4, 2, 64, 16, torch.float32, device, 1e-5)


def test_split_count_fills_the_machine_only_when_needed(device):
    assert num_kv_splits(256, 32, 4096, device) == 1
    assert num_kv_splits(1, 8, 32768, device) > 1
    assert num_kv_splits(1, 8, 64, device) == 1  # too short to be worth splitting


@pytest.mark.skipif(not CUDA, reason="bf16 dots are wrong in Triton's interpreter; GPU only")
@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize(
    "context_lens, hq, hkv, head_dim, block_size",
    CASES + [([4096, 1, 777, 2048], 32, 8, 128, 16), ([20000], 32, 8, 128, 32),
             ([300] * 64, 32, 32, 128, 16)],
)
def test_decode_attention_cuda(context_lens, hq, hkv, head_dim, block_size, dtype, tol, device):
    _check(context_lens, hq, hkv, head_dim, block_size, dtype, device, tol)


def _args(device):
    q, k_cache, v_cache, tables, lens = _paged_inputs([5, 9], 4, 2, 32, 16, torch.float32, device)
    return dict(q=q, k_cache=k_cache, v_cache=v_cache, block_tables=tables, context_lens=lens, scale=0.1)


@pytest.mark.parametrize(
    "name, bad, message",
    [
        ("block_tables", lambda a: a["block_tables"].long(), "block_tables"),
        ("context_lens", lambda a: a["context_lens"].float(), "context_lens"),
        ("k_cache", lambda a: a["k_cache"][..., :16], "k_cache"),
        ("q", lambda a: a["q"][:, :3], "q heads"),
        ("v_cache", lambda a: a["v_cache"].to("meta"), "v_cache"),
        ("v_cache", lambda a: a["v_cache"].transpose(2, 3).contiguous().transpose(2, 3), "v_cache"),
        ("scale", lambda a: 0.0, "scale"),
    ],
)
def test_decode_attention_rejects_bad_arguments(name, bad, message, device):
    args = _args(device)
    args[name] = bad(args)
    with pytest.raises(ValueError, match=message):
        decode_attention(**args)


def test_decode_attention_takes_int64_context_lens(device):
    args = _args(device)
    expected = reference.decode_attention(**args)
    args["context_lens"] = args["context_lens"].long()
    torch.testing.assert_close(decode_attention(**args), expected, rtol=1e-5, atol=1e-5)
