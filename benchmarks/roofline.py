"""A roofline model of AR decoding and mask-predict from the model's shapes.

Per forward, the work is FLOPs = 2 * (matmul parameters) * (tokens) + attention
(4 * query tokens * keys * heads * head_dim per layer), and the memory traffic is at least
the weights once plus the KV cache the step reads. A step takes at least
max(bytes / bandwidth, flops / matmul rate) on a machine with those ceilings.

- AR, batch B, context c: one decode step reads the weights once for all B sequences and
  each sequence's KV cache; it yields B tokens. Small B is memory-bound (weights dominate),
  so tokens/s grows ~linearly with B until the step turns compute-bound.
- Mask-predict, batch B, prompt p, N target slots, T passes: every pass is a full
  bidirectional forward over L = p + N tokens per sequence (no cache reuse); the request
  yields N tokens after T passes, T * L / N times AR's work per token.

Which mode is faster where is not asserted here: the report compares these bounds (and the
measured points) numerically. A step also has a fixed cost that neither bound sees (Python,
kernel launches, scheduling); `Ceilings.fixed_step` adds a measured one to every step, and
`batch_seconds_*` account a measured batch step by step (sequences that finished early
leave it), so predicted crossovers can be checked against measured ones.
"""
from dataclasses import dataclass


@dataclass
class ModelShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    gated_mlp: bool  # Llama-style gate+up+down (3 matrices) vs GPT/BERT up+down (2)
    bytes_per_param: int

    @classmethod
    def from_hf_config(cls, config, bytes_per_param=2):
        """GPT-2, Llama/Qwen2/Mistral, BERT/RoBERTa and DistilBERT configs."""
        get = lambda *names: next(getattr(config, n) for n in names if getattr(config, n, None) is not None)  # noqa: E731
        hidden = get("hidden_size", "n_embd", "dim")
        heads = get("num_attention_heads", "n_head", "n_heads")
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        intermediate = get("intermediate_size", "n_inner", "hidden_dim") if any(
            getattr(config, n, None) for n in ("intermediate_size", "n_inner", "hidden_dim")
        ) else 4 * hidden
        return cls(
            layers=get("num_hidden_layers", "n_layer", "n_layers"),
            hidden=hidden,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=getattr(config, "head_dim", None) or hidden // heads,
            intermediate=intermediate,
            vocab=config.vocab_size,
            gated_mlp=getattr(config, "model_type", "") in ("llama", "qwen2", "mistral", "eurobert"),
            bytes_per_param=bytes_per_param,
        )

    @property
    def layer_matmul_params(self):
        attn = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim + self.heads * self.head_dim * self.hidden
        mlp = (3 if self.gated_mlp else 2) * self.hidden * self.intermediate
        return attn + mlp

    @property
    def matmul_params(self):
        """Parameters touched by matmuls for every token (layers; the LM head is separate)."""
        return self.layers * self.layer_matmul_params

    @property
    def weight_bytes(self):
        return (self.matmul_params + self.vocab * self.hidden) * self.bytes_per_param

    def kv_bytes_per_token(self):
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_param

    def attention_flops(self, queries, keys):
        return 4 * queries * keys * self.heads * self.head_dim * self.layers

    def head_flops(self, rows):
        return 2 * rows * self.hidden * self.vocab


@dataclass
class Ceilings:
    bandwidth: float  # bytes / s
    flops: float  # FLOP / s
    fixed_step: float = 0.0  # seconds every step costs whatever its size (measured)

    def seconds(self, nbytes, nflops):
        return self.fixed_step + max(nbytes / self.bandwidth, nflops / self.flops)


def ar_decode_step(shape: ModelShape, batch: int, context: int):
    """(bytes, flops) of one decode step of `batch` sequences at `context` cached tokens."""
    nbytes = shape.weight_bytes + batch * context * shape.kv_bytes_per_token()
    nflops = batch * 2 * shape.matmul_params + shape.attention_flops(batch, context) + shape.head_flops(batch)
    return nbytes, nflops


def ar_prefill(shape: ModelShape, batch: int, prompt: int):
    nbytes = shape.weight_bytes + batch * prompt * shape.kv_bytes_per_token()
    nflops = batch * (2 * shape.matmul_params * prompt + shape.attention_flops(prompt, prompt) / 2)
    return nbytes, nflops + shape.head_flops(batch)


def mp_pass(shape: ModelShape, batch: int, prompt: int, length: int):
    """(bytes, flops) of one bidirectional pass over prompt + length tokens per sequence."""
    seq = prompt + length + 2  # [CLS] ... [SEP]
    activations = 2 * batch * seq * shape.hidden * shape.layers * shape.bytes_per_param
    nbytes = shape.weight_bytes + activations
    nflops = batch * (2 * shape.matmul_params * seq + shape.attention_flops(seq, seq)) + shape.head_flops(batch * length)
    return nbytes, nflops


def ar_tokens_per_second(shape, ceilings: Ceilings, batch, prompt, new_tokens):
    """Roofline bound on generated tokens/s for AR: one prefill, then new_tokens decode steps."""
    seconds = ceilings.seconds(*ar_prefill(shape, batch, prompt))
    for step in range(1, new_tokens):
        seconds += ceilings.seconds(*ar_decode_step(shape, batch, prompt + step))
    return batch * new_tokens / seconds


def mp_tokens_per_second(shape, ceilings: Ceilings, batch, prompt, length, iterations):
    """Roofline bound on generated tokens/s for mask-predict with T = iterations passes."""
    seconds = iterations * ceilings.seconds(*mp_pass(shape, batch, prompt, length))
    return batch * length / seconds


def crossover_batch(ar_rate, mp_rate, max_batch=4096):
    """Smallest power-of-two batch at which ar_rate(batch) >= mp_rate(batch), or None."""
    batch = 1
    while batch <= max_batch:
        if ar_rate(batch) >= mp_rate(batch):
            return batch
        batch *= 2
    return None


def batch_seconds_ar(shape, ceilings_at, prompt, generated):
    """Bound on one AR batch: a prefill, then one decode step per generated position, each over
    the sequences still running (generated[i] tokens for sequence i, <eos> included).
    ceilings_at(rows) -> the Ceilings for a step of `rows` tokens."""
    batch = len(generated)
    seconds = ceilings_at(batch * prompt).seconds(*ar_prefill(shape, batch, prompt))
    for step in range(1, max(generated)):
        running = sum(1 for g in generated if g > step)
        seconds += ceilings_at(running).seconds(*ar_decode_step(shape, running, prompt + step))
    return seconds


def batch_seconds_mp(shape, ceilings_at, prompt, frames, passes, length_head):
    """Bound on one mask-predict batch: a length-head pass (one slot) when used, then passes[i]
    passes over frames[i] slots for request i; each step runs the requests with passes left."""
    batch = len(frames)
    seconds = ceilings_at(batch * (prompt + 3)).seconds(*mp_pass(shape, batch, prompt, 1)) if length_head else 0.0
    for step in range(max(passes)):
        live = [f for f, p in zip(frames, passes) if p > step]
        nbytes = flops = 0.0
        for f in set(live):
            b, fl = mp_pass(shape, live.count(f), prompt, f)
            nbytes, flops = nbytes + b, flops + fl
        nbytes -= (len(set(live)) - 1) * shape.weight_bytes  # the weights are read once per step
        seconds += ceilings_at(sum(prompt + f + 2 for f in live)).seconds(nbytes, flops)
    return seconds
