"""The one transformer every trained model of the experiment is built from.

A pre-norm block (RMSNorm, rotary self-attention, SwiGLU MLP) repeated `layers` times between
a token embedding and a final RMSNorm, with the output head tied to the embedding. The only
switch is the attention mask: `causal=True` lets position i see positions <= i, `causal=False`
lets every position see every real (non-padding) position. Objectives live elsewhere
(`benchmarks/objectives.py`); the model just maps token ids to logits.

The parameter names are those of Hugging Face's Llama, and a bidirectional Llama is exactly
HF's EuroBERT, so a trained model saves as a standard checkpoint without any conversion:
causal -> `LlamaForCausalLM`, bidirectional -> `EuroBertForMaskedLM` (same tensors, same
names). `save_checkpoint` writes one, `load_checkpoint` reads it back.
"""
import json
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

RMS_EPS = 1e-5
ROPE_THETA = 10000.0


@dataclass(frozen=True)
class ModelSize:
    hidden: int
    layers: int
    heads: int
    intermediate: int  # SwiGLU width: 3 * hidden * intermediate weights per MLP
    context: int = 64  # positions (rotary, so only the training lengths bound it)


# "small" is the bundled size; "tiny" the second point of the scale axis (about a third).
SIZES = {
    "small": ModelSize(hidden=96, layers=3, heads=4, intermediate=256),
    "tiny": ModelSize(hidden=64, layers=2, heads=4, intermediate=176),
    # not a point of the sweep: ar-gpt2-draft, cheap enough to draft for the small causal model
    "draft": ModelSize(hidden=32, layers=1, heads=2, intermediate=96),
}


def rotary_tables(head_dim, positions, device=None):
    """cos, sin [positions, head_dim] in HF's rotate-half layout."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    freqs = torch.arange(positions, dtype=torch.float32, device=device)[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, size: ModelSize):
        super().__init__()
        self.heads, self.head_dim = size.heads, size.hidden // size.heads
        self.q_proj = nn.Linear(size.hidden, size.hidden, bias=False)
        self.k_proj = nn.Linear(size.hidden, size.hidden, bias=False)
        self.v_proj = nn.Linear(size.hidden, size.hidden, bias=False)
        self.o_proj = nn.Linear(size.hidden, size.hidden, bias=False)

    def forward(self, x, cos, sin, mask):
        b, n, _ = x.shape
        split = lambda t: t.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, size: ModelSize):
        super().__init__()
        self.gate_proj = nn.Linear(size.hidden, size.intermediate, bias=False)
        self.up_proj = nn.Linear(size.hidden, size.intermediate, bias=False)
        self.down_proj = nn.Linear(size.intermediate, size.hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """x + attn(norm(x)), then h + mlp(norm(h)): the same block for both attention masks."""

    def __init__(self, size: ModelSize):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(size.hidden, eps=RMS_EPS)
        self.self_attn = Attention(size)
        self.post_attention_layernorm = nn.RMSNorm(size.hidden, eps=RMS_EPS)
        self.mlp = MLP(size)

    def forward(self, x, cos, sin, mask):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Transformer(nn.Module):
    def __init__(self, size: ModelSize, vocab_size: int, causal: bool):
        super().__init__()
        self.size, self.vocab_size, self.causal = size, vocab_size, causal
        self.embed_tokens = nn.Embedding(vocab_size, size.hidden)
        self.layers = nn.ModuleList(Block(size) for _ in range(size.layers))
        self.norm = nn.RMSNorm(size.hidden, eps=RMS_EPS)
        cos, sin = rotary_tables(size.hidden // size.heads, size.context)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.apply(_init)

    def attention_mask(self, segments):
        """Bool [B, 1, n, n], True where a query may attend to a key: same sequence (segment id
        > 0; several sequences may share a row), and for a causal model not a later position."""
        n = segments.shape[1]
        mask = (segments[:, None, :, None] == segments[:, None, None, :]) & (segments[:, None, None, :] > 0)
        if self.causal:
            mask = mask & torch.ones(n, n, dtype=torch.bool, device=segments.device).tril()
        # a padding query row would see nothing (NaN in SDPA); let it see itself
        return mask | torch.eye(n, dtype=torch.bool, device=segments.device)

    def forward(self, input_ids, valid=None):
        """input_ids [B, n] (right-padded), valid [B, n] bool (default: all) -> logits [B, n, V]."""
        return self.head(self.hidden_states(input_ids, valid))

    def head(self, hidden):
        """Final hidden states [..., H] -> logits [..., V] (the head is the tied embedding)."""
        return F.linear(hidden, self.embed_tokens.weight)

    def hidden_states(self, input_ids, valid=None, segments=None, positions=None):
        """The final (normed) hidden states [B, n, H]. One right-padded sequence per row
        (`valid` marks its tokens), or packed rows: `segments` numbers each row's sequences
        from 1 (0 = padding) and `positions` counts from 0 in each sequence."""
        b, n = input_ids.shape
        if segments is None:
            valid = torch.ones_like(input_ids, dtype=torch.bool) if valid is None else valid
            segments = valid.long()
            positions = torch.arange(n, device=input_ids.device).expand(b, n)
        if int(positions.max()) >= self.size.context:
            raise ValueError(f"a sequence exceeds the model's context of {self.size.context} tokens")
        mask = self.attention_mask(segments)
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)


def _init(module):
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def forward_flops(size: ModelSize, vocab_size: int, seq_lens, head_rows: int):
    """Matmul FLOPs of one forward over sequences of `seq_lens` tokens with the head computed
    at `head_rows` positions: 2 per weight per token, plus QK^T and AV (2 n^2 H each per
    layer, counted in full for both masks); training is about 3x this."""
    per_token = 2 * size.layers * (4 * size.hidden**2 + 3 * size.hidden * size.intermediate)
    attention = sum(4 * n * n * size.hidden * size.layers for n in seq_lens)
    return per_token * sum(seq_lens) + attention + 2 * size.hidden * vocab_size * head_rows


# ---- HF checkpoints ---------------------------------------------------------------------------

ARCHITECTURES = {True: ("LlamaForCausalLM", "llama"), False: ("EuroBertForMaskedLM", "eurobert")}


def hf_config(size: ModelSize, vocab_size: int, causal: bool, special_ids: dict, extra=None):
    """config.json of the HF family the model saves as (see the module docstring)."""
    architecture, model_type = ARCHITECTURES[causal]
    config = {
        "architectures": [architecture], "model_type": model_type, "vocab_size": vocab_size,
        "hidden_size": size.hidden, "intermediate_size": size.intermediate,
        "num_hidden_layers": size.layers, "num_attention_heads": size.heads,
        "num_key_value_heads": size.heads, "head_dim": size.hidden // size.heads, "hidden_act": "silu",
        "max_position_embeddings": size.context, "rms_norm_eps": RMS_EPS,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": True, "dtype": "float16",
        **special_ids, **(extra or {}),
    }
    return config


def save_checkpoint(model: Transformer, folder, special_ids: dict, extra_config=None):
    """model.safetensors (fp16, HF names) + config.json; the tokenizer is saved by the caller."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    tensors = {f"model.{name}": t.detach().to("cpu", torch.float16).contiguous()
               for name, t in model.state_dict().items()}
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    config = hf_config(model.size, model.vocab_size, model.causal, special_ids, extra_config)
    config["experiment_size"] = asdict(model.size)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def load_checkpoint(folder, device="cpu"):
    """A saved checkpoint as a Transformer in fp32 (the fp16 weights exactly)."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    causal = {arch: c for c, (arch, _) in ARCHITECTURES.items()}.get(config["architectures"][0])
    if causal is None:
        raise ValueError(f"{folder!r} is not an experiment checkpoint: architectures {config['architectures']}")
    size = ModelSize(hidden=config["hidden_size"], layers=config["num_hidden_layers"],
                     heads=config["num_attention_heads"], intermediate=config["intermediate_size"],
                     context=config["max_position_embeddings"])
    model = Transformer(size, config["vocab_size"], causal)
    weights = load_file(os.path.join(folder, "model.safetensors"))
    model.load_state_dict({k.removeprefix("model."): v.float() for k, v in weights.items()})
    return model.to(device).eval(), config
