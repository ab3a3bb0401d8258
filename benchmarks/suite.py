"""What every part of the headline report shares: sizes, the models, the prompts, the engines.

A `Run` holds the checkpoints (engine instances are made on first use), the reference language
(None for user checkpoints), the held-out prompts and the results dict each part fills with
plain JSON-able values, so report.py and plots.py work from results.json alone.

The bundled models are the experiment's (benchmarks/objectives.py: config.json names their
"experiment_model"); their continuations are scored exactly by the reference language, and a
bidirectional one decodes as it was trained, length head first (benchmarks/decode_configs.py).
Other checkpoints decode a fixed number of slots and are scored by a judge model.
"""
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine import LLM

from .objectives import MODELS

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Sizes:
    """How much work each part does; --quick shrinks everything for CI, GPU sizes grow batches."""

    quality_prompts: int = 1000
    sampling_seeds: int = 3
    temperatures: tuple = (0.7, 1.0, 1.3)  # the quality-entropy frontier
    passes: tuple = (1, 4, "N")  # mask-predict T of the CMLM ("N": one token per pass); the MLM: T=1 and N
    batch_sizes: tuple = (1, 4, 16, 64)
    throughput_passes: tuple = (1, 4, "N")
    prompt_words: int = 4  # throughput prompts all have this many words (no padding for HF)
    new_tokens: int = 32  # user checkpoints: AR max tokens and mask-predict slots
    latency_requests: int = 48
    latency_load: tuple = (0.25, 0.5)  # arrival rates as fractions of AR's measured capacity
    reps: int = 15  # paired engine/HF repetitions per throughput point, at least;
    point_seconds: float = 4.0  # more until a point's timed calls add up to this (both sides),
    max_reps: int = 150  # at most this many: a fast point gets as steady a median as a slow one
    warmup: int = 1

    @classmethod
    def quick(cls):
        return cls(quality_prompts=64, sampling_seeds=2, temperatures=(1.0,), passes=(1, "N"),
                   batch_sizes=(1, 4), throughput_passes=(1, "N"), latency_requests=8, latency_load=(0.5,), reps=2,
                   point_seconds=0.0)

    @classmethod
    def gpu(cls):
        return cls(batch_sizes=(1, 4, 16, 64, 256), latency_requests=256, reps=5, point_seconds=0.0)


def display_path(path):
    """A checkpoint path as the report shows it: relative to the repository when inside it,
    else as given (never an absolute path of the machine that ran it, for bundled models)."""
    resolved = Path(path).resolve()
    if resolved == REPO or REPO in resolved.parents:
        return str(resolved.relative_to(REPO))
    return str(path)


def experiment_spec(path):
    """The experiment model a checkpoint was trained as (benchmarks/objectives.py), or None."""
    config = Path(path) / "config.json"
    if not config.exists():
        return None
    return MODELS.get(json.loads(config.read_text()).get("experiment_model"))


@dataclass
class Run:
    ar_path: str
    mlm_paths: dict  # label -> masked-LM checkpoint folder ("cmlm", "mlm", ...)
    device: str
    dtype: str
    kernel_backend: str | None
    sizes: Sizes
    language: object = None  # benchmarks.language.ReferenceLanguage, None for user checkpoints
    judge_path: str | None = None
    prompts: list = field(default_factory=list)  # prompt texts of the quality part
    references: list = field(default_factory=list)  # their held-out continuations (may be empty)
    throughput_prompts: list = field(default_factory=list)  # prompt texts of equal token length
    results: dict = field(default_factory=dict)
    _llms: dict = field(default_factory=dict)

    def llm(self, path):
        if path not in self._llms:
            self._llms[path] = LLM(path, device=self.device, dtype=self.dtype, kernel_backend=self.kernel_backend)
        return self._llms[path]

    def spec(self, path):
        return experiment_spec(path)

    @property
    def torch_dtype(self):
        return next(self.llm(self.ar_path).engine.loaded.model.parameters()).dtype

    def models(self):
        """(label, path) of every model, the causal one first."""
        return [("ar", self.ar_path), *self.mlm_paths.items()]

    def name(self, path):
        return os.path.basename(os.path.normpath(path))
