"""Model registry: HF `architectures` name -> (module in engine.models, class, decoding kind).

"causal" models decode autoregressively with a KV cache; "masked" models run mask-predict.
Modules are imported lazily so loading one family never imports the others.

MODEL_TYPES maps each supported HF `model_type` to the module whose classes read that
config; a checkpoint whose architecture and model_type point to different modules is
refused (its config would lack the fields the class reads).
"""

MODEL_REGISTRY = {
    "GPT2LMHeadModel": ("gpt2", "GPT2ForCausalLM", "causal"),
    "LlamaForCausalLM": ("llama", "LlamaForCausalLM", "causal"),
    "Qwen2ForCausalLM": ("llama", "LlamaForCausalLM", "causal"),
    "MistralForCausalLM": ("llama", "LlamaForCausalLM", "causal"),
    "BertForMaskedLM": ("bert", "BertForMaskedLM", "masked"),
    "RobertaForMaskedLM": ("bert", "BertForMaskedLM", "masked"),
    "DistilBertForMaskedLM": ("bert", "BertForMaskedLM", "masked"),
    "EuroBertForMaskedLM": ("eurobert", "EuroBertForMaskedLM", "masked"),
}

MODEL_TYPES = {
    "gpt2": "gpt2",
    "llama": "llama",
    "qwen2": "llama",
    "mistral": "llama",
    "bert": "bert",
    "roberta": "bert",
    "distilbert": "bert",
    "eurobert": "eurobert",
}
