"""decode_attention against kernels.reference over scattered, NaN-poisoned paged caches."""
import dataclasses
import importlib

import pytest
import torch

import kernels
from benchmarks.kernel_cases import DECODE, DecodeCase, decode_inputs
from kernels import reference
from tests.kernel_launches import record_launches

# The function first (lazy load), then its module from sys.modules: importing the submodule
# by name before would shadow the function `kernels.decode_attention` with the module.
decode_attention = kernels.decode_attention
decode_module = importlib.import_module("kernels.decode_attention")

CUDA = torch.cuda.is_available()


def _check(case, dtype, device, tol, run=decode_attention):
    args = decode_inputs(case, dtype, device, poison=True)
    scale = case.head_dim ** -0.5
    out = run(*args, scale)
    expected = reference.decode_attention(*args, scale)
    assert out.dtype == dtype and out.shape == expected.shape
    torch.testing.assert_close(out.float(), expected.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("case", DECODE.cpu, ids=DecodeCase.label)
def test_decode_attention_fp32(case, device):
    _check(case, torch.float32, device, 1e-5)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_decode_attention_16bit(dtype, tol, device):
    """In the interpreter bf16 goes through fp32 dot operands (its bf16 dot is wrong)."""
    _check(DecodeCase((9, 40), 8, 2, 64, 16), dtype, device, tol)


def test_split_plan_follows_each_context_not_the_table_width(device):
    """A wide table (as the engine's CUDA graphs pass it) gives the grid many partitions; a
    short context uses one of them, a long one several, and the result is the reference's."""
    case = DecodeCase((700, 3, 40), 4, 1, 64, 32, max_model_len=4096)
    capacity = 4096
    assert decode_module.max_kv_splits(3, 1, capacity, device) > 1
    _check(case, torch.float32, device, 1e-5)


def test_a_split_step_is_one_launch_that_leaves_its_counters_at_zero(device, monkeypatch):
    """The last partition of each (sequence, KV head) merges them in the same launch, then
    resets its counter: a second launch over the same counters gives the same result."""
    launches = record_launches(monkeypatch)
    case = DecodeCase((700, 3, 300, 40), 8, 2, 32, 16, max_model_len=4096)  # GQA groups of 4
    for _ in range(2):
        _check(case, torch.float32, device, 1e-5)
    assert launches == ["_decode_partition_kernel"] * 2
    assert not decode_module._counters[torch.device(device)].any()


def test_split_count_fills_the_machine_only_when_needed(device):
    assert decode_module.max_kv_splits(256, 32, 4096, device) == 1
    assert decode_module.max_kv_splits(1, 8, 32768, device) > 1
    assert decode_module.max_kv_splits(1, 8, 64, device) == 1  # too short to be worth splitting


@pytest.mark.parametrize("num_stages", [1, 3])
def test_launch_parameters_do_not_change_the_result(num_stages, device):
    case = DecodeCase((300, 5), 4, 2, 32, 16, max_model_len=512)
    config = dataclasses.replace(decode_module.default_config(torch.float32, 32), num_stages=num_stages)
    _check(case, torch.float32, device, 1e-5,
           run=lambda *args: decode_module.launch(*args, config))


@pytest.mark.skipif(not CUDA, reason="bf16 dots are wrong in Triton's interpreter; GPU only")
@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("case", DECODE.cpu + DECODE.gpu, ids=DecodeCase.label)
def test_decode_attention_cuda(case, dtype, tol, device):
    _check(case, dtype, device, tol)


def _args(device):
    q, k_cache, v_cache, tables, lens = decode_inputs(DecodeCase((5, 9), 4, 2, 32, 16), torch.float32, device)
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
