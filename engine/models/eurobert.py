"""EuroBERT masked LMs (HF `EuroBertForMaskedLM`): the Llama model without the causal mask.

Pre-norm layers with RMSNorm, rotary positions, a SwiGLU MLP, a final RMSNorm and a one-layer
MLM head (tied to the embedding when the config says so; biased when `mlp_bias` is set). The
weights have Llama's names under `model.`, so this is the Llama family (engine/models/llama.py)
with one change: each layer attends with `EncoderAttention` (every token of a packed sequence
sees all of it, no KV cache) instead of the paged causal attention. The benchmark's
bidirectional models (benchmarks/transformer.py) save in this format.
"""
from engine.attention import EncoderAttention
from engine.distributed.layers import ParallelLMHead
from engine.distributed.parallel import SINGLE
from engine.models.llama import LlamaForCausalLM
from engine.models.weights import WeightSource


class EuroBertForMaskedLM(LlamaForCausalLM):
    """The MaskedLM protocol: forward(input_ids, positions, meta) over packed sequences
    (meta.mode "encoder") -> hidden states; compute_logits; load_weights."""

    def __init__(self, hf_config, ops, tp=SINGLE):
        super().__init__(hf_config, ops, tp)
        for layer in self.layers:
            attention = layer.self_attn
            attention.attn = EncoderAttention(ops.attention, attention.num_heads, attention.head_dim,
                                              attention.head_dim**-0.5)
        self.max_positions = hf_config.max_position_embeddings  # tokens one sequence may hold
        if getattr(hf_config, "mlp_bias", False):
            self.lm_head = ParallelLMHead(hf_config.hidden_size, hf_config.vocab_size, True, tp)

    def _weight_source(self, name):
        if name == "lm_head.bias":
            return WeightSource((name,))
        return super()._weight_source(name)
