"""The Llama family (Llama 2/3, Qwen2, Mistral) on the engine's kernels.

Pre-norm decoder blocks with RMSNorm, rotary positions (rope scaling folded into the tables),
grouped-query attention and a SwiGLU MLP. q/k/v and gate/up are fused into one matmul each,
and each of those runs fused with the RMSNorm before it (`RMSNorm.linear`).
Family differences come from the config: Qwen2 has biases on q/k/v, `attention_bias` /
`mlp_bias` add the others, `tie_word_embeddings` shares the embedding with the head, and a
Mistral sliding window caps the served context (see loader.max_positions). Under tensor
parallelism (`tp`) each rank holds its query heads with their key/value heads, its slice of
the MLP and its vocabulary rows.
"""
from torch import nn

from engine.attention import AttentionMetadata, PagedAttention, Rope
from engine.distributed.layers import ParallelLMHead, QKVParallelLinear, RowParallelLinear, VocabParallelEmbedding
from engine.distributed.parallel import SINGLE
from engine.models.layers import GatedMLP, RMSNorm, RotaryTables
from engine.models.weights import WeightSource, canonical_names, load_hf_weights

# Fused parameters of ours -> the HF projections concatenated (in this order) to form them.
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _head_dim(config):
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class LlamaAttention(nn.Module):
    def __init__(self, config, ops, rotary, tp):
        super().__init__()
        self.rotary = rotary
        num_heads = config.num_attention_heads
        num_kv_heads = getattr(config, "num_key_value_heads", None) or num_heads
        self.head_dim = _head_dim(config)
        attention_bias = getattr(config, "attention_bias", False)
        qkv_bias = attention_bias or config.model_type == "qwen2"
        self.qkv_proj = QKVParallelLinear(config.hidden_size, self.head_dim, num_heads, num_kv_heads, qkv_bias, tp)
        self.num_heads, self.num_kv_heads = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads  # this rank's
        self.split_sizes = self.qkv_proj.split_sizes
        self.o_proj = RowParallelLinear(num_heads * self.head_dim, config.hidden_size, attention_bias, tp)
        self.attn = PagedAttention(ops.attention, self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim**-0.5)

    def forward(self, qkv, positions, meta, rows=None):
        """qkv [T, (Hq + 2 Hkv) D]: the qkv projection without its bias (the decoder layer runs
        it fused with the input norm); the bias goes in with the rotation and the cache store
        (one kernel on GPUs). Returns [T, hidden], or [R, hidden] at `rows` only (the output
        projection is row by row, so it runs at those rows alone)."""
        q, k, v = qkv.split(self.split_sizes, dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        rope = Rope(positions, *self.rotary.get(qkv.device), self.qkv_proj.bias)
        attended = self.attn(q, k, v, meta, rope).flatten(1)
        return self.o_proj(attended if rows is None else attended.index_select(0, rows))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config, ops, rotary, tp):
        super().__init__()
        hidden, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = RMSNorm(ops, hidden, eps)
        self.self_attn = LlamaAttention(config, ops, rotary, tp)
        self.post_attention_layernorm = RMSNorm(ops, hidden, eps)
        self.mlp = GatedMLP(ops, hidden, config.intermediate_size, bias=getattr(config, "mlp_bias", False), tp=tp)

    def forward(self, hidden, residual, positions, meta, rows=None):
        """hidden: the previous layer's output; residual: the stream before it (None at the
        first layer). Returns this layer's (output, residual stream), at `rows` only when
        given (everything after the attention is row by row).

        Each norm runs fused with the projection that reads it (`RMSNorm.linear`), so a
        decode step's non-GEMM launches are the attention's (rotary_store_kv, then the
        attention kernel) and silu_and_mul."""
        qkv_proj, gate_up_proj = self.self_attn.qkv_proj, self.mlp.gate_up_proj
        if residual is None:
            qkv, residual = self.input_layernorm.linear(hidden, qkv_proj.weight), hidden
        else:
            qkv, residual = self.input_layernorm.linear(hidden, qkv_proj.weight, residual=residual)
        attended = self.self_attn(qkv, positions, meta, rows)
        if rows is not None:
            residual = residual.index_select(0, rows)
        gate_up, residual = self.post_attention_layernorm.linear(attended, gate_up_proj.weight, gate_up_proj.bias,
                                                                 residual)
        return self.mlp(gate_up), residual


class LlamaForCausalLM(nn.Module):
    def __init__(self, hf_config, ops, tp=SINGLE):
        super().__init__()
        config = hf_config
        if config.hidden_act != "silu":
            raise ValueError(f"hidden_act must be 'silu' (SwiGLU MLP), got {config.hidden_act!r}")
        self.config = config
        self.tie_word_embeddings = getattr(config, "tie_word_embeddings", False)
        self.vocab_size = config.vocab_size
        rotary = RotaryTables(config)
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size, tp)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, ops, rotary, tp) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(ops, config.hidden_size, config.rms_norm_eps)
        self.lm_head = ParallelLMHead(config.hidden_size, config.vocab_size, False, tp)
        self.num_layers = config.num_hidden_layers
        self.num_kv_heads = self.layers[0].self_attn.num_kv_heads
        self.head_dim = _head_dim(config)

    def attention_layers(self):
        return [layer.self_attn.attn for layer in self.layers]

    def forward(self, input_ids, positions, meta: AttentionMetadata, rows=None):
        """Flat tokens input_ids/positions [T] -> final hidden states [T, hidden_size], or at
        `rows` only (the CausalLM protocol)."""
        hidden = self.embed_tokens(input_ids)
        residual = None
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            hidden, residual = layer(hidden, residual, positions, meta, rows if index == last else None)
        out, _ = self.norm(hidden, residual)
        return out

    def compute_logits(self, hidden):
        return self.lm_head(hidden)

    def load_weights(self, weights):
        weights = canonical_names(weights, "model.")
        sources = {name: self._weight_source(name) for name, _ in self.named_parameters(remove_duplicate=False)}
        load_hf_weights(self, weights, sources, ignored=self._ignored)

    def _weight_source(self, name):
        if name == "lm_head.weight":
            return WeightSource(("model.embed_tokens.weight" if self.tie_word_embeddings else name,))
        module, leaf = name.rsplit(".", 1)
        owner, _, proj = module.rpartition(".")
        if proj in FUSED:
            return WeightSource(tuple(f"model.{owner}.{part}.{leaf}" for part in FUSED[proj]))
        return WeightSource((f"model.{name}",))

    def _ignored(self, name):
        # Older checkpoints store rotary inv_freq buffers; a tied head may be saved anyway.
        if name.endswith("rotary_emb.inv_freq"):
            return True
        return self.tie_word_embeddings and name == "lm_head.weight"
