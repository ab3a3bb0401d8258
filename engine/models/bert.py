"""BERT-family masked LMs (HF `BertForMaskedLM`, `RobertaForMaskedLM`, `DistilBertForMaskedLM`).

All three are the same post-norm bidirectional encoder:

    h = LN(word[ids] + pos[positions + offset] + token_type[0])
    per layer:  a = LN(attn(h) + h);  h = LN(W2 act(W1 a) + a)
    MLM head:   logits = decoder(LN(act(dense(h)))) + bias   (decoder tied to word)

and differ only in weight names, config field names and two details: RoBERTa numbers
positions from padding_idx + 1 (fairseq's padding offset), DistilBERT has no token-type
embedding. Sequences are packed flat (no padding is computed); attention runs in "encoder"
mode over the metadata's `cu_seqlens_q`, so nothing attends across sequences. Under tensor
parallelism (`tp`) each rank holds its heads, its feed-forward slice and its vocabulary rows
of the word embedding and the decoder; the rest is replicated.
"""
from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from engine.attention import AttentionMetadata, EncoderAttention
from engine.distributed.layers import ParallelLMHead, QKVParallelLinear, RowParallelLinear, VocabParallelEmbedding
from engine.distributed.parallel import SINGLE
from engine.models.layers import MLP, Activation, LayerNorm, check_activation
from engine.models.weights import WeightSource, load_hf_weights


@dataclass(frozen=True)
class Family:
    """How one HF family names its weights: ours -> theirs (theirs may list q/k/v parts)."""

    prefix: str  # the encoder's prefix in the checkpoint ("bert.", ...)
    layers: str  # the layer list under it
    embeddings: dict
    layer: dict
    head: dict
    head_bias: str
    ignored: tuple  # checkpoint names (prefixes) that carry nothing the MLM needs


_ENCODER_EMBEDDINGS = {
    "word.weight": "embeddings.word_embeddings.weight",
    "position.weight": "embeddings.position_embeddings.weight",
    "token_type.weight": "embeddings.token_type_embeddings.weight",
    "embed_norm.weight": "embeddings.LayerNorm.weight",
    "embed_norm.bias": "embeddings.LayerNorm.bias",
}
_ENCODER_LAYER = {
    "qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "attn_out": ("attention.output.dense",),
    "attn_norm": ("attention.output.LayerNorm",),
    "ffn.fc_in": ("intermediate.dense",),
    "ffn.fc_out": ("output.dense",),
    "ffn_norm": ("output.LayerNorm",),
}

FAMILIES = {
    "bert": Family(
        prefix="bert.", layers="encoder.layer", embeddings=_ENCODER_EMBEDDINGS, layer=_ENCODER_LAYER,
        head={"head_dense": "cls.predictions.transform.dense", "head_norm": "cls.predictions.transform.LayerNorm",
              "decoder": "cls.predictions.decoder"},
        head_bias="cls.predictions.bias",
        ignored=("bert.pooler.", "cls.seq_relationship.", "bert.embeddings.position_ids"),
    ),
    "roberta": Family(
        prefix="roberta.", layers="encoder.layer", embeddings=_ENCODER_EMBEDDINGS, layer=_ENCODER_LAYER,
        head={"head_dense": "lm_head.dense", "head_norm": "lm_head.layer_norm", "decoder": "lm_head.decoder"},
        head_bias="lm_head.bias",
        ignored=("roberta.pooler.", "roberta.embeddings.position_ids"),
    ),
    "distilbert": Family(
        prefix="distilbert.", layers="transformer.layer",
        embeddings={k: v for k, v in _ENCODER_EMBEDDINGS.items() if not k.startswith("token_type")},
        layer={
            "qkv": ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
            "attn_out": ("attention.out_lin",), "attn_norm": ("sa_layer_norm",),
            "ffn.fc_in": ("ffn.lin1",), "ffn.fc_out": ("ffn.lin2",), "ffn_norm": ("output_layer_norm",),
        },
        head={"head_dense": "vocab_transform", "head_norm": "vocab_layer_norm", "decoder": "vocab_projector"},
        head_bias="vocab_projector.bias",
        ignored=("distilbert.embeddings.position_ids",),
    ),
}


def _shape(config, model_type):
    """(hidden, heads, layers, intermediate, eps, act, head act) from either config spelling."""
    if model_type == "distilbert":
        return config.dim, config.n_heads, config.n_layers, config.hidden_dim, 1e-12, config.activation, config.activation
    head_act = "gelu" if model_type == "roberta" else config.hidden_act  # RoBERTa's head is always erf-GELU
    return (config.hidden_size, config.num_attention_heads, config.num_hidden_layers,
            config.intermediate_size, config.layer_norm_eps, config.hidden_act, head_act)


class EncoderLayer(nn.Module):
    def __init__(self, ops, hidden, heads, intermediate, eps, activation, tp):
        super().__init__()
        self.head_dim = hidden // heads
        self.qkv = QKVParallelLinear(hidden, self.head_dim, heads, heads, True, tp)
        self.num_heads = self.qkv.num_heads  # this rank's
        self.attn = EncoderAttention(ops.attention, self.num_heads, self.head_dim, self.head_dim**-0.5)
        self.attn_out = RowParallelLinear(hidden, hidden, True, tp)
        self.attn_norm = LayerNorm(ops, hidden, eps)
        self.ffn = MLP(ops, hidden, intermediate, activation, tp=tp)
        self.ffn_norm = LayerNorm(ops, hidden, eps)

    def forward(self, h, meta, rows=None):
        """[T, H] -> [T, H], or [R, H] at `rows` only (all after the attention is row by row)."""
        # strided views of the fused projection: both backends take any row stride
        q, k, v = self.qkv(h).view(-1, 3 * self.num_heads, self.head_dim).chunk(3, dim=1)
        attended = self.attn(q, k, v, meta).flatten(1)
        if rows is not None:
            attended, h = attended.index_select(0, rows), h.index_select(0, rows)
        a, _ = self.attn_norm(self.attn_out(attended), h)
        out, _ = self.ffn_norm(self.ffn(a), a)
        return out


class BertForMaskedLM(nn.Module):
    """One class for the three families; `hf_config.model_type` picks the weight names."""

    def __init__(self, hf_config, ops, tp=SINGLE):
        super().__init__()
        model_type = hf_config.model_type
        if model_type not in FAMILIES:
            raise ValueError(f"model_type must be one of {sorted(FAMILIES)}, got {model_type!r}")
        self.family = FAMILIES[model_type]
        self.tie_word_embeddings = getattr(hf_config, "tie_word_embeddings", True)
        hidden, heads, layers, intermediate, eps, act, head_act = _shape(hf_config, model_type)
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} must be a multiple of the attention heads {heads}")
        self.ops, self.num_layers = ops, layers
        self.vocab_size = hf_config.vocab_size
        num_positions = hf_config.max_position_embeddings
        # RoBERTa's position 0 of a sequence is embedding row padding_idx + 1
        self.position_offset = hf_config.pad_token_id + 1 if model_type == "roberta" else 0
        self.max_positions = num_positions - self.position_offset  # tokens one sequence may hold
        self.word = VocabParallelEmbedding(self.vocab_size, hidden, tp)
        self.position = nn.Embedding(num_positions, hidden)
        self.token_type = nn.Embedding(hf_config.type_vocab_size, hidden) if "token_type.weight" in self.family.embeddings else None
        self.embed_norm = LayerNorm(ops, hidden, eps)
        activation = check_activation(act, "hidden_act" if model_type != "distilbert" else "activation")
        self.layers = nn.ModuleList(
            EncoderLayer(ops, hidden, heads, intermediate, eps, activation, tp) for _ in range(layers)
        )
        self.head_dense = nn.Linear(hidden, hidden)
        self.head_act = Activation(ops, check_activation(head_act, "hidden_act"))
        self.head_norm = LayerNorm(ops, hidden, eps)
        self.decoder = ParallelLMHead(hidden, self.vocab_size, True, tp)

    def forward(self, input_ids, positions, meta: AttentionMetadata, rows=None):
        """Packed sequences -> final hidden states [T, H], or [R, H] at `rows` only.

        input_ids/positions [T] (positions count from 0 in each sequence; the family's offset
        is added here); meta is an "encoder" AttentionMetadata bounding each sequence.
        """
        pos = F.embedding(positions + self.position_offset, self.position.weight)
        if self.token_type is not None:
            pos = pos + self.token_type.weight[0]  # every token is segment 0
        h, _ = self.embed_norm(self.word(input_ids), pos)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            h = layer(h, meta, rows if index == last else None)
        return h

    def compute_logits(self, hidden):
        """The MLM head on the rows asked for, hidden [N, H] -> fp32 logits [N, V]."""
        return self.decoder(self.head_norm(self.head_act(self.head_dense(hidden))))

    def load_weights(self, weights):
        """HF-named tensors (already in dtype and device) -> parameters; the decoder is tied to
        the word embeddings and its bias is the head's bias, whether or not they were saved."""
        load_hf_weights(self, weights, self._weight_sources(), ignored=self._ignored)

    def _ignored(self, name):
        family = self.family
        decoder = family.head["decoder"]
        saved_tied = {f"{decoder}.bias"} - {family.head_bias}
        if self.tie_word_embeddings:
            saved_tied.add(f"{decoder}.weight")
        return name in saved_tied or name.startswith(family.ignored)

    def _weight_sources(self):
        family, p = self.family, self.family.prefix
        sources = {ours: WeightSource((p + theirs,)) for ours, theirs in family.embeddings.items()}
        for i in range(self.num_layers):
            base = f"{p}{family.layers}.{i}."
            for ours, parts in family.layer.items():
                for leaf in ("weight", "bias"):
                    sources[f"layers.{i}.{ours}.{leaf}"] = WeightSource(tuple(f"{base}{part}.{leaf}" for part in parts))
        for ours, theirs in family.head.items():
            if ours != "decoder":
                sources[f"{ours}.weight"] = WeightSource((f"{theirs}.weight",))
                sources[f"{ours}.bias"] = WeightSource((f"{theirs}.bias",))
        decoder = family.head["decoder"]
        tied = self.tie_word_embeddings
        sources["decoder.weight"] = sources["word.weight"] if tied else WeightSource((f"{decoder}.weight",))
        sources["decoder.bias"] = WeightSource((family.head_bias,))
        return sources
