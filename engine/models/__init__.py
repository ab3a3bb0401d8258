"""Model registry: HF `architectures` name -> (module in engine.models, class, decoding kind).

"causal" models decode autoregressively with a KV cache; "masked" models run mask-predict.
Modules are imported lazily so loading one family never imports the others.
"""

MODEL_REGISTRY = {
    "GPT2LMHeadModel": ("gpt2", "GPT2ForCausalLM", "causal"),
    "LlamaForCausalLM": ("llama", "LlamaForCausalLM", "causal"),
    "Qwen2ForCausalLM": ("llama", "LlamaForCausalLM", "causal"),
    "MistralForCausalLM": ("llama", "LlamaForCausalLM", "causal"),
    "BertForMaskedLM": ("bert", "BertForMaskedLM", "masked"),
    "RobertaForMaskedLM": ("bert", "BertForMaskedLM", "masked"),
    "DistilBertForMaskedLM": ("bert", "BertForMaskedLM", "masked"),
}
