"""SpeculativeConfig: the `speculative_config` engine option, validated once.

`LLM(target, speculative_config={"model": draft, "num_speculative_tokens": k, ...})`:
  model                   the draft checkpoint folder: a masked LM (drafts k slots in
                          parallel passes) or a smaller causal LM (k autoregressive steps)
  num_speculative_tokens  k >= 1, the most draft tokens verified per request per step
  draft_passes            masked drafts only: encoder passes per draft, in [1, k] (default 1)
  draft_length            masked drafts only: [MASK] slots appended to the context, >= k
                          (default k); only the first k are proposed. A masked LM trained to
                          fill a fixed number of answer slots drafts best with that number.
  adaptive                choose k per step, 0 included, from the measured acceptance and the
                          measured cost of drafting and verifying at the step's batch size

Checks that need only the values run here (at EngineConfig construction); the checks that
need the draft's files (its kind, tokenizer and vocabulary against the target's) run in
`draft_check.check_draft` before any weights are loaded.
"""
import os
from dataclasses import dataclass, fields

from engine.validation import INT32_MAX, check_bool, check_int

REQUIRED = ("model", "num_speculative_tokens")


@dataclass
class SpeculativeConfig:
    model: str
    num_speculative_tokens: int
    draft_passes: int | None = None
    draft_length: int | None = None
    adaptive: bool = False

    def __post_init__(self):
        path = os.fspath(self.model) if isinstance(self.model, os.PathLike) else self.model
        if not isinstance(path, str) or not path or "\0" in path:
            raise TypeError(f"speculative_config['model'] must be a draft checkpoint folder path, got {self.model!r}")
        self.model = path
        k = check_int("num_speculative_tokens", self.num_speculative_tokens, low=1, high=INT32_MAX)
        self.num_speculative_tokens = k
        self.draft_passes = check_int("draft_passes", self.draft_passes, low=1, high=k, allow_none=True)
        self.draft_length = check_int("draft_length", self.draft_length, low=k, high=INT32_MAX, allow_none=True)
        self.adaptive = check_bool("adaptive", self.adaptive)

    @classmethod
    def from_value(cls, value) -> "SpeculativeConfig | None":
        """None, a SpeculativeConfig, or a dict of its fields (vLLM's spelling)."""
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"speculative_config must be a dict (or None), got {type(value).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(known), key=str)
        if unknown:
            raise TypeError(f"speculative_config: unknown key(s) {unknown}; known: {known}")
        missing = [name for name in REQUIRED if name not in value]
        if missing:
            raise TypeError(f"speculative_config needs {missing}")
        return cls(**value)
