"""Attention for the engine's models: per-step metadata, the layers, and one backend per
kernel backend (Triton kernels on GPUs, plain torch on CPUs)."""
from engine.attention.layers import EncoderAttention, PagedAttention
from engine.attention.metadata import MODES, AttentionMetadata, Rope
from engine.attention.torch_backend import TorchAttention
from engine.attention.triton_backend import TritonAttention

ATTENTION_BACKENDS = {"triton": TritonAttention, "torch": TorchAttention}

__all__ = ["AttentionMetadata", "MODES", "Rope", "PagedAttention", "EncoderAttention", "ATTENTION_BACKENDS"]
