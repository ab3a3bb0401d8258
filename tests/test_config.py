"""EngineConfig: types, ranges (int32 sizes for the kernels' indices) and canonical forms."""
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import EngineConfig


@pytest.mark.parametrize("options, error, message", [
    (dict(model=b"some/dir"), TypeError, "model must be a checkpoint folder path"),
    (dict(model=3), TypeError, "model must be a checkpoint folder path"),
    (dict(model=""), ValueError, "model must be a non-empty path"),
    (dict(model="a\0b"), ValueError, "without NUL characters"),
    (dict(device=0), TypeError, "device must be a str"),
    (dict(device="cuda:x"), ValueError, "device must be a torch device string"),
    (dict(device="meta"), ValueError, "device must be 'cpu' or 'cuda'"),
    (dict(dtype=torch.float64), ValueError, "dtype must be one of"),
    (dict(dtype=None), TypeError, "dtype must be a str"),
    (dict(kernel_backend=3), TypeError, "kernel_backend must be a str"),
    (dict(block_size=2**31), ValueError, r"block_size must be in \[1, 2147483647\]"),
    (dict(max_num_seqs=np.float64(4)), TypeError, "max_num_seqs must be an int"),
    (dict(max_num_batched_tokens=True), TypeError, "max_num_batched_tokens must be an int, got bool"),
    (dict(cuda_graph_max_batch=0), ValueError, "cuda_graph_max_batch must be in"),
    (dict(num_kv_blocks=2**31), ValueError, "num_kv_blocks must be in"),
    (dict(num_kv_blocks=2**28, block_size=16), ValueError, "exceed the int32 slot index"),
    (dict(cpu_kv_cache_bytes=0), ValueError, "cpu_kv_cache_bytes must be in"),
    (dict(gpu_memory_utilization=0), ValueError, r"gpu_memory_utilization must be in \(0, 1\]"),
    (dict(gpu_memory_utilization=float("nan")), ValueError, "gpu_memory_utilization must be finite"),
    (dict(gpu_memory_utilization=True), TypeError, "gpu_memory_utilization must be a number"),
    (dict(allow_pickle=1), TypeError, "allow_pickle must be a bool, got int"),
    (dict(enforce_eager="false"), TypeError, "enforce_eager must be a bool"),
    (dict(seed=None), TypeError, "seed must be an int"),
])
def test_bad_config(options, error, message):
    options = {"model": "some/dir", **options}
    with pytest.raises(error, match=message):
        EngineConfig(**options)


def test_cuda_index_beyond_the_devices():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    message = "no CUDA device is available" if count == 0 else "there are only"
    with pytest.raises(ValueError, match=message):
        EngineConfig("some/dir", device=f"cuda:{count}")


def test_canonical_forms():
    c = EngineConfig(
        Path("some/dir"), device=torch.device("cpu"), dtype=torch.float16, block_size=np.int64(8),
        max_num_seqs=np.int32(4), num_kv_blocks=np.uint16(2**15), gpu_memory_utilization=np.float32(0.5),
        enable_prefix_caching=np.bool_(False), seed=-1,
    )
    assert (c.model, c.device, c.dtype, c.block_size, c.max_num_seqs) == ("some/dir", "cpu", torch.float16, 8, 4)
    assert c.num_kv_blocks == 2**15 and type(c.num_kv_blocks) is int and type(c.block_size) is int
    assert c.gpu_memory_utilization == 0.5 and type(c.gpu_memory_utilization) is float
    assert c.enable_prefix_caching is False and c.seed == 2**64 - 1
    assert EngineConfig("d", num_kv_blocks=2**27, block_size=16).num_kv_blocks == 2**27  # 2^31 slots: fits
