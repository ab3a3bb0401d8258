"""EngineConfig: every knob of the engine, validated once; the LLM/Engine keywords are its fields."""
import os
from dataclasses import dataclass, field, fields
from numbers import Real

import torch

from engine.backend import BACKENDS, default_backend
from engine.validation import check_bool, check_int

DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16")


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class EngineConfig:
    """How the engine runs a model.

    The KV cache holds `num_kv_blocks` blocks of `block_size` tokens when given; otherwise it
    is sized from a budget: `gpu_memory_utilization` of the GPU memory still free after the
    weights are loaded, or `cpu_kv_cache_bytes` on CPU. A step computes at most
    `max_num_batched_tokens` tokens of at most `max_num_seqs` sequences; longer prompts are
    prefilled in chunks. `seed` seeds the generator that draws seeds for unseeded requests.
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

    def __post_init__(self):
        if isinstance(self.model, os.PathLike):
            self.model = os.fspath(self.model)
        if not isinstance(self.model, str) or not self.model:
            raise TypeError(f"model must be a checkpoint folder path (str or os.PathLike), got {self.model!r}")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device must be a torch device string like 'cpu' or 'cuda', got {self.device!r}") from e
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device is 'cuda' but no CUDA device is available")
        self.device = str(device)
        if not isinstance(self.dtype, torch.dtype) and self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {self.dtype!r}")
        if self.kernel_backend is None:
            self.kernel_backend = default_backend(self.device)
        if self.kernel_backend not in BACKENDS:
            raise ValueError(f"kernel_backend must be one of {BACKENDS}, got {self.kernel_backend!r}")
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens", "cuda_graph_max_batch", "cpu_kv_cache_bytes"):
            check_int(name, getattr(self, name), low=1)
        if self.num_kv_blocks is not None:
            check_int("num_kv_blocks", self.num_kv_blocks, low=1)
        u = self.gpu_memory_utilization
        if isinstance(u, bool) or not isinstance(u, Real) or not 0 < u <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {u!r}")
        for name in ("enable_prefix_caching", "enforce_eager", "allow_pickle"):
            check_bool(name, getattr(self, name))
        check_int("seed", self.seed, low=0)

    @classmethod
    def from_kwargs(cls, model, **kwargs) -> "EngineConfig":
        """The config for LLM(model, **kwargs); an unknown keyword is a TypeError listing the known."""
        known = {f.name for f in fields(cls)} - {"model"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown engine option(s) {unknown}; known: {sorted(known)}")
        return cls(model=model, **kwargs)
