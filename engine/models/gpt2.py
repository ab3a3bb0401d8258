"""GPT-2 (HF `GPT2LMHeadModel` checkpoints) on the engine's kernels.

Pre-norm blocks with learned absolute positions:

    h = wte[ids] + wpe[positions]
    per block:  h += attn(ln_1(h));  h += mlp(ln_2(h))
    logits = ln_f(h) @ wte^T   (the head is tied to the token embedding unless saved apart)

The residual add is fused into the next LayerNorm (engine.models.layers). Under tensor
parallelism (`tp`) each rank holds its heads, its MLP slice and its vocabulary rows.
"""
import torch.nn.functional as F
from torch import nn

from engine.attention import AttentionMetadata, PagedAttention
from engine.distributed.layers import ParallelLMHead, QKVParallelLinear, RowParallelLinear, VocabParallelEmbedding
from engine.distributed.parallel import SINGLE
from engine.models.layers import MLP, LayerNorm, check_activation
from engine.models.weights import WeightSource, canonical_names, load_hf_weights


class GPT2Attention(nn.Module):
    def __init__(self, config, ops, layer_idx, tp):
        super().__init__()
        hidden, heads = config.n_embd, config.n_head
        self.head_dim = hidden // heads
        self.qkv_proj = QKVParallelLinear(hidden, self.head_dim, heads, heads, True, tp)
        self.num_heads = self.qkv_proj.num_heads  # this rank's
        self.o_proj = RowParallelLinear(hidden, hidden, True, tp)
        scale = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            scale /= layer_idx + 1
        self.attn = PagedAttention(ops.attention, self.num_heads, self.num_heads, self.head_dim, scale)

    def forward(self, x, meta, rows=None):
        """[T, hidden] -> [T, hidden], or [R, hidden] at `rows` only (the output projection is
        row by row, so it runs at those rows alone)."""
        q, k, v = self.qkv_proj(x).view(-1, 3 * self.num_heads, self.head_dim).chunk(3, dim=1)
        attended = self.attn(q, k, v, meta).flatten(1)
        return self.o_proj(attended if rows is None else attended.index_select(0, rows))


class GPT2Block(nn.Module):
    def __init__(self, config, ops, layer_idx, tp):
        super().__init__()
        hidden, eps = config.n_embd, config.layer_norm_epsilon
        self.ln_1 = LayerNorm(ops, hidden, eps)
        self.attn = GPT2Attention(config, ops, layer_idx, tp)
        self.ln_2 = LayerNorm(ops, hidden, eps)
        self.mlp = MLP(ops, hidden, config.n_inner or 4 * hidden, config.activation_function, tp=tp)

    def forward(self, hidden, residual, meta, rows=None):
        """hidden: the previous block's output; residual: the stream before it (None at the
        first block). Returns this block's (output, residual stream), at `rows` only when
        given (everything after the attention is row by row)."""
        if residual is None:
            x, residual = self.ln_1(hidden), hidden
        else:
            x, residual = self.ln_1(hidden, residual)
        attended = self.attn(x, meta, rows)
        if rows is not None:
            residual = residual.index_select(0, rows)
        x, residual = self.ln_2(attended, residual)
        return self.mlp(x), residual


class GPT2ForCausalLM(nn.Module):
    def __init__(self, hf_config, ops, tp=SINGLE):
        super().__init__()
        config = hf_config
        check_activation(config.activation_function, "GPT-2 activation_function")
        self.config = config
        self.tie_word_embeddings = getattr(config, "tie_word_embeddings", True)
        self.vocab_size = config.vocab_size
        self.wte = VocabParallelEmbedding(config.vocab_size, config.n_embd, tp)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.blocks = nn.ModuleList(GPT2Block(config, ops, i, tp) for i in range(config.n_layer))
        self.ln_f = LayerNorm(ops, config.n_embd, config.layer_norm_epsilon)
        self.lm_head = ParallelLMHead(config.n_embd, config.vocab_size, False, tp)
        self.num_layers = config.n_layer
        self.num_kv_heads = config.n_head // tp.size  # this rank's (the blocks checked that it divides)
        self.head_dim = config.n_embd // config.n_head

    def attention_layers(self):
        return [block.attn.attn for block in self.blocks]

    def forward(self, input_ids, positions, meta: AttentionMetadata, rows=None):
        """Flat tokens input_ids/positions [T] -> final hidden states [T, n_embd], or at
        `rows` only (the CausalLM protocol)."""
        hidden = self.wte(input_ids) + F.embedding(positions, self.wpe.weight)
        residual = None
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            hidden, residual = block(hidden, residual, meta, rows if index == last else None)
        out, _ = self.ln_f(hidden, residual)
        return out

    def compute_logits(self, hidden):
        return self.lm_head(hidden)

    def load_weights(self, weights):
        weights = canonical_names(weights, "transformer.")
        load_hf_weights(self, weights, self._weight_sources(), ignored=self._ignored)

    def _ignored(self, name):
        # Older checkpoints store the causal-mask buffers; a tied head may be saved anyway.
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            return True
        return self.tie_word_embeddings and name == "lm_head.weight"

    def _weight_sources(self):
        t = "transformer."
        sources = {
            "wte.weight": WeightSource((t + "wte.weight",)),
            "wpe.weight": WeightSource((t + "wpe.weight",)),
            "ln_f.weight": WeightSource((t + "ln_f.weight",)),
            "ln_f.bias": WeightSource((t + "ln_f.bias",)),
            "lm_head.weight": WeightSource(
                (t + "wte.weight",) if self.tie_word_embeddings else ("lm_head.weight",)
            ),
        }
        hf_names = {  # ours -> HF, per block; Conv1D weights are stored [in, out]
            "ln_1": "ln_1", "attn.qkv_proj": "attn.c_attn", "attn.o_proj": "attn.c_proj",
            "ln_2": "ln_2", "mlp.fc_in": "mlp.c_fc", "mlp.fc_out": "mlp.c_proj",
        }
        for i in range(self.num_layers):
            for ours, theirs in hf_names.items():
                hf = f"{t}h.{i}.{theirs}"
                conv1d = not ours.startswith("ln_")
                sources[f"blocks.{i}.{ours}.weight"] = WeightSource((hf + ".weight",), conv1d)
                sources[f"blocks.{i}.{ours}.bias"] = WeightSource((hf + ".bias",))
        return sources
