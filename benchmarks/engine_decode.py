"""Decode a configuration (benchmarks/decode_configs.py) with the engine, as the report does.

- A causal model generates until `<eos>` (its natural length) or the context is full.
- A bidirectional experiment model runs two engine requests per prompt: the length head (a
  one-slot frame), then mask-predict in the frame it names. Both count in the time and passes.
- Any other masked LM fills `fixed_frame` slots.
Texts are rendered from the token ids up to the first `<eos>`, every token shown as itself (a
special token the engine's text would hide makes the output invalid, as it should). They
are rendered when first read, so a timed decode yields token ids, as the HF baselines do.
"""
import time
from dataclasses import dataclass, field
from functools import cached_property

from .decode_configs import DecodeConfig, length_head_params
from .frame import MAX_SLOTS, frame_of_length_token


@dataclass
class EngineOutput:
    token_ids: list
    passes: int  # forward passes: AR tokens generated; mask-predict passes incl. the length head
    frame: int | None = None
    tokenizer: object = field(default=None, repr=False, compare=False)

    @cached_property
    def text(self) -> str:
        eos = self.tokenizer.eos_token_id
        ids = self.token_ids
        cut = ids[:ids.index(eos)] if eos in ids else ids
        return self.tokenizer.decode(cut, skip_special_tokens=False, clean_up_tokenization_spaces=False).strip()

    @property
    def words(self) -> int:
        return len(self.text.split())


def engine_decode(llm, spec, config: DecodeConfig, prompts, seeds, oracle_frames=None, fixed_frame=None):
    """([EngineOutput], seconds) of `config` on prompt texts, one seed per prompt (where a seed
    can change the result: `_per_request`)."""
    tok = llm.tokenizer
    start = time.perf_counter()
    if config.kind == "ar":
        limit = llm.engine.loaded.max_positions
        params = _per_request(config.ar_params, [limit - len(tok(p)["input_ids"]) for p in prompts], seeds,
                              config.seeded)
        outs = llm.generate(prompts, params)
        seconds = time.perf_counter() - start
        return [EngineOutput(list(o.token_ids), len(o.token_ids), tokenizer=tok) for o in outs], seconds
    frames, head_passes = oracle_frames, 0
    if frames is None and spec is not None and spec.length_head:
        heads = llm.generate(prompts, _per_request(lambda _, seed: length_head_params(config.temperature, seed),
                                                   [1] * len(prompts), seeds, config.seeded))
        frames = [frame_of_length_token(tok.convert_ids_to_tokens(h.token_ids[0])) or MAX_SLOTS for h in heads]
        head_passes = 1
    frames = frames or [fixed_frame or MAX_SLOTS] * len(prompts)
    outs = llm.generate(prompts, _per_request(config.mp_params, frames, seeds, config.seeded))
    seconds = time.perf_counter() - start
    return [EngineOutput(list(o.token_ids), o.metrics.nfe + head_passes, n, tok) for o, n in zip(outs, frames)], seconds


def _per_request(make, keys, seeds, seeded):
    """The params of each request, make(key, seed). Where no seed changes the result (greedy,
    a deterministic rule) requests of one key share one seedless params object, as a user
    passes one params for every prompt: building a params object per request was ~0.5 ms
    (2%) of the report's batch-64 mask-predict decode, work of the harness that HF's loop does
    not have."""
    if seeded:
        return [make(key, seed) for key, seed in zip(keys, seeds)]
    shared = {key: make(key, None) for key in dict.fromkeys(keys)}
    return [shared[key] for key in keys]
