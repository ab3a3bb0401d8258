"""Decoding configurations, one definition for the sweep's reference decoder and the engine.

A configuration decodes a prompt autoregressively ("ar": a causal next-token model) or by
mask-predict in the answer frame ("mp": low-confidence re-masking, or "commit"; "l2r": one slot
per pass, left to right, i.e. blocks of one slot). `passes` is T, or "N" for as many passes as
the frame has slots (one token per pass: the masked model's own ceiling). A bidirectional
experiment model first asks its length head for the frame (benchmarks/frame.py), at the
configuration's temperature and seed; `oracle_frame` uses the held-out answer's frame instead
(a diagnostic: the length decided perfectly).
"""
from dataclasses import dataclass

from engine.params import MaskPredictParams, SamplingParams


@dataclass(frozen=True)
class DecodeConfig:
    name: str
    kind: str  # "ar" | "mp" | "l2r"
    temperature: float = 0.0
    passes: object = "N"  # int T, or "N"
    remask: str = "low_confidence"
    oracle_frame: bool = False

    @property
    def seeded(self) -> bool:
        """Whether a seed can change the result: sampling, or random re-masking."""
        return self.temperature > 0 or self.remask == "random"

    def mp_params(self, frame, seed=None):
        """The engine's parameters for a frame of `frame` slots."""
        iterations = frame if self.passes == "N" else min(self.passes, frame)
        return MaskPredictParams(length=frame, iterations=iterations, remask=self.remask,
                                 block_length=1 if self.kind == "l2r" else None, temperature=self.temperature,
                                 seed=seed)

    def ar_params(self, max_tokens, seed=None):
        return SamplingParams(temperature=self.temperature, max_tokens=max_tokens, seed=seed)


def length_head_params(temperature, seed=None):
    """The length head: one masked slot, one pass."""
    return MaskPredictParams(length=1, iterations=1, temperature=temperature, seed=seed)


def request_seeds(seed, n):
    """One seed per request of a run seeded `seed`."""
    return [seed * 1_000_003 + i for i in range(n)]


SWEEP_AR = (DecodeConfig("AR greedy", "ar"), DecodeConfig("AR sampled", "ar", 1.0))
SWEEP_FRAMED = (DecodeConfig("T=1", "mp", passes=1), DecodeConfig("T=4", "mp", passes=4),
                DecodeConfig("T=N", "mp"), DecodeConfig("L2R greedy", "l2r"),
                DecodeConfig("L2R sampled", "l2r", 1.0))
