"""What the endpoints share: the engine loop, the metrics, and facts about the served model
read once at start-up (before the engine thread runs, so reading the engine is safe)."""
import time
from dataclasses import dataclass, field

from engine.detokenizer import batch_decode
from engine.server.engine_loop import EngineLoop
from engine.server.errors import APIError
from engine.server.metrics import ServerMetrics
from engine.server.protocol import DEFAULT_MAX_TOKENS


@dataclass
class ServerState:
    loop: EngineLoop
    metrics: ServerMetrics
    model_name: str
    model_path: str
    kind: str  # "causal" | "masked"
    max_positions: int
    token_texts: list[str]  # each token id's own text, for logprobs
    has_chat_template: bool
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def for_engine(cls, engine, model_name: str) -> "ServerState":
        metrics = ServerMetrics(model_name, stats=lambda: loop.stats)  # `loop` is bound just below
        loop = EngineLoop(engine, metrics)
        tokenizer = engine.tokenizer
        return cls(
            loop=loop, metrics=metrics, model_name=model_name, model_path=engine.config.model, kind=engine.kind,
            max_positions=engine.loaded.max_positions,
            token_texts=token_texts(tokenizer, engine.loaded.vocab_size),
            has_chat_template=getattr(tokenizer, "chat_template", None) is not None,
        )

    def check_model(self, model: str) -> None:
        if model != self.model_name:
            raise APIError(400, f"model '{model}' is not served here; this server serves '{self.model_name}'",
                           "model")

    def model_card(self) -> dict:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "duodecode",
                "root": self.model_path, "max_model_len": self.max_positions, "kind": self.kind}

    def default_chat_max_tokens(self, engine, prompt_len: int) -> int:
        """A chat without max_tokens: a causal LM may fill the rest of its context (and of the
        KV cache); a masked LM fills its default number of slots. Runs on the engine thread."""
        if self.kind == "masked":
            return DEFAULT_MAX_TOKENS
        capacity = min(self.max_positions, engine.stats()["num_kv_blocks"] * engine.config.block_size)
        if prompt_len >= capacity:
            raise ValueError(f"the chat prompt ({prompt_len} tokens) leaves no room to answer in the "
                             f"model's context of {capacity} tokens")
        return capacity - prompt_len


def token_texts(tokenizer, vocab_size: int) -> list[str]:
    """The text of every token id alone (special tokens included), in one batched decode."""
    if tokenizer is None:
        return [f"token_id:{i}" for i in range(vocab_size)]
    return batch_decode(tokenizer, [[i] for i in range(vocab_size)], skip_special_tokens=False)
