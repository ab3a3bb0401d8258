"""duodecode: autoregressive and mask-predict decoding of Hugging Face checkpoints.

LLM and Engine load on first use, so `import engine.params` stays light (no transformers).
"""
from engine.config import EngineConfig
from engine.outputs import RequestMetrics, RequestOutput
from engine.params import MaskPredictParams, SamplingParams

__all__ = ["LLM", "Engine", "EngineConfig", "SamplingParams", "MaskPredictParams", "RequestOutput", "RequestMetrics"]


def __getattr__(name):
    if name in ("LLM", "Engine"):
        from engine import engine as _engine

        return getattr(_engine, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
