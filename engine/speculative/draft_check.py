"""Can this draft checkpoint draft for this target? Answered from their files before any
weights load: the checks of `speculative_config` that need more than its values (those run in
config.py, when EngineConfig is built)."""
from engine.models.loader import load_tokenizer, read_architecture, read_config
from engine.speculative.config import SpeculativeConfig


def check_draft(target_path: str, spec: SpeculativeConfig) -> str:
    """The draft's kind ("masked" | "causal") after checking it can draft for the target:
    a causal target, the same tokenizer vocabulary, a draft vocabulary at least as large,
    and options that apply to the draft's kind. Reads configs and tokenizers, no weights."""
    _, target_kind = read_architecture(target_path)
    if target_kind != "causal":
        raise ValueError(f"speculative decoding needs a causal target model; {target_path!r} is a {target_kind} LM")
    _, kind = read_architecture(spec.model)
    if kind == "causal":
        for name in ("draft_passes", "draft_length"):
            if getattr(spec, name) is not None:
                raise ValueError(f"{name} applies to a masked draft model; {spec.model!r} is a causal LM")
    target_tok, draft_tok = load_tokenizer(target_path), load_tokenizer(spec.model)
    if target_tok is None or draft_tok is None:
        missing = target_path if target_tok is None else spec.model
        raise ValueError(f"speculative decoding checks that target and draft share a tokenizer; {missing!r} has none")
    target_vocab, draft_vocab = target_tok.get_vocab(), draft_tok.get_vocab()
    if target_vocab != draft_vocab:
        differ = sum(1 for t in set(target_vocab) | set(draft_vocab) if target_vocab.get(t) != draft_vocab.get(t))
        raise ValueError(f"the draft model {spec.model!r} has a different tokenizer than the target "
                         f"({differ} tokens differ); speculative decoding needs the same token ids")
    target_size, draft_size = read_config(target_path).vocab_size, read_config(spec.model).vocab_size
    if draft_size < target_size:
        raise ValueError(f"the draft model's vocabulary ({draft_size}) is smaller than the target's "
                         f"({target_size}); it could not propose every token")
    return kind
