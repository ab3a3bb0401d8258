"""EngineConfig: every knob of the engine, validated once; the LLM/Engine keywords are its fields.

Sizes the kernels index with int32 (KV block tables, slot maps, cu_seqlens) are capped at
2^31 - 1; numpy numbers are accepted and stored as Python ones.
"""
import os
from dataclasses import dataclass, field, fields

import torch

from engine.backend import BACKENDS, default_backend
from engine.speculative.config import SpeculativeConfig
from engine.validation import INT32_MAX, INT64_MAX, check_bool, check_choice, check_int, check_real, check_seed

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_NAMES = ("auto", *DTYPES)
INT32_SIZES = ("block_size", "max_num_seqs", "max_num_batched_tokens", "cuda_graph_max_batch")


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _model_path(model) -> str:
    path = os.fspath(model) if isinstance(model, os.PathLike) else model
    if not isinstance(path, str):
        raise TypeError(f"model must be a checkpoint folder path (str or os.PathLike), got {model!r}")
    if not path or "\0" in path:
        raise ValueError(f"model must be a non-empty path without NUL characters, got {model!r}")
    return path


def _device(device) -> str:
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str like 'cpu' or 'cuda:0' (or a torch.device), got {type(device).__name__}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"device must be a torch device string like 'cpu' or 'cuda', got {device!r}") from e
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError("device is 'cuda' but no CUDA device is available")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {device!r}: there are only {count} CUDA device(s) (indices 0-{count - 1})")
    return str(parsed)


def check_tensor_parallel_size(size, device: str, cuda_devices: int) -> int:
    """An int >= 1; on CUDA, ranks take consecutive devices from the configured one, so they
    must all exist."""
    size = check_int("tensor_parallel_size", size, low=1, high=INT32_MAX)
    parsed = torch.device(device)
    if parsed.type == "cuda":
        first = parsed.index or 0
        if first + size > cuda_devices:
            raise ValueError(
                f"tensor_parallel_size {size} needs CUDA devices {first}..{first + size - 1}, "
                f"but there are {cuda_devices}"
            )
    return size


def _dtype(dtype):
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {DTYPE_NAMES} or the matching torch dtype, got {dtype}")
        return dtype
    return check_choice("dtype", dtype, DTYPE_NAMES)


@dataclass
class EngineConfig:
    """How the engine runs a model.

    The KV cache holds `num_kv_blocks` blocks of `block_size` tokens when given; otherwise it
    is sized from a budget: `gpu_memory_utilization` of the GPU memory still free after the
    weights are loaded, or `cpu_kv_cache_bytes` on CPU. A step computes at most
    `max_num_batched_tokens` tokens of at most `max_num_seqs` sequences; longer prompts are
    prefilled in chunks. `seed` (any int, stored mod 2^64) seeds the generator that draws
    seeds for unseeded requests. `enable_nvtx` marks the engine's phases (schedule, prepare,
    forward, sample, outputs; mask-predict: schedule, forward, predict, remask, detokenize)
    as NVTX ranges for Nsight Systems (also switched on by DUODECODE_NVTX=1).
    `tensor_parallel_size` > 1 splits the model over that many processes
    (engine.distributed), each on its own device on CUDA.
    `speculative_config` (a dict, engine/speculative/config.py) turns on speculative decoding
    with a draft model. `async_scheduling` keeps one autoregressive step in flight, so the
    host schedules the next step while the device runs this one (engine/async_executor.py);
    None turns it on where it pays and is supported: CUDA, no speculative decoding,
    tensor_parallel_size 1.
    """

    model: str
    device: str = field(default_factory=_default_device)
    dtype: str | torch.dtype = "auto"
    kernel_backend: str | None = None
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 4096
    num_kv_blocks: int | None = None
    gpu_memory_utilization: float = 0.9
    cpu_kv_cache_bytes: int = 512 * 1024 * 1024
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    cuda_graph_max_batch: int = 256
    allow_pickle: bool = False
    seed: int = 0
    enable_nvtx: bool = False
    tensor_parallel_size: int = 1
    speculative_config: dict | SpeculativeConfig | None = None
    async_scheduling: bool | None = None

    def __post_init__(self):
        self.model = _model_path(self.model)
        self.device = _device(self.device)
        self.dtype = _dtype(self.dtype)
        if self.kernel_backend is None:
            self.kernel_backend = default_backend(self.device)
        self.kernel_backend = check_choice("kernel_backend", self.kernel_backend, BACKENDS)
        for name in INT32_SIZES:
            setattr(self, name, check_int(name, getattr(self, name), low=1, high=INT32_MAX))
        self.num_kv_blocks = check_int("num_kv_blocks", self.num_kv_blocks, low=1, high=INT32_MAX, allow_none=True)
        if self.num_kv_blocks is not None and self.num_kv_blocks * self.block_size > INT32_MAX + 1:
            raise ValueError(
                f"num_kv_blocks ({self.num_kv_blocks}) x block_size ({self.block_size}) cache slots exceed "
                f"the int32 slot index (at most 2^31)"
            )
        self.cpu_kv_cache_bytes = check_int("cpu_kv_cache_bytes", self.cpu_kv_cache_bytes, low=1, high=INT64_MAX)
        u = check_real("gpu_memory_utilization", self.gpu_memory_utilization)
        if not 0 < u <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {u!r}")
        self.gpu_memory_utilization = u
        for name in ("enable_prefix_caching", "enforce_eager", "allow_pickle", "enable_nvtx"):
            setattr(self, name, check_bool(name, getattr(self, name)))
        self.seed = check_seed("seed", self.seed)
        cuda_devices = torch.cuda.device_count() if self.device.startswith("cuda") else 0
        self.tensor_parallel_size = check_tensor_parallel_size(self.tensor_parallel_size, self.device, cuda_devices)
        self.speculative_config = SpeculativeConfig.from_value(self.speculative_config)
        self.async_scheduling = self._async_scheduling()

    def _async_scheduling(self) -> bool:
        synchronous = ("speculative decoding" if self.speculative_config is not None else
                       "tensor parallelism" if self.tensor_parallel_size > 1 else None)
        if self.async_scheduling is None:
            return self.device.startswith("cuda") and synchronous is None
        value = check_bool("async_scheduling", self.async_scheduling)
        if value and synchronous is not None:
            raise ValueError(f"async_scheduling is not supported with {synchronous}; leave it unset or False")
        return value

    @classmethod
    def from_kwargs(cls, model, **kwargs) -> "EngineConfig":
        """The config for LLM(model, **kwargs); an unknown keyword is a TypeError listing the known."""
        known = {f.name for f in fields(cls)} - {"model"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown engine option(s) {unknown}; known: {sorted(known)}")
        return cls(model=model, **kwargs)
