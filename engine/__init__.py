"""duodecode: autoregressive and mask-predict decoding of Hugging Face checkpoints.

LLM and Engine load on first use, so `import engine.params` stays light (no transformers).
"""
from engine.config import EngineConfig
from engine.outputs import RequestError, RequestMetrics, RequestOutput
from engine.params import MaskPredictParams, SamplingParams

__all__ = ["LLM", "Engine", "EngineConfig", "SamplingParams", "MaskPredictParams", "RequestOutput",
           "RequestMetrics", "RequestError"]


def __getattr__(name):
    if name == "Engine":
        from engine.engine import Engine

        return Engine
    if name == "LLM":
        from engine.llm import LLM

        return LLM
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
