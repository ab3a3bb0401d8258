"""Tiny random HF causal checkpoints (saved with `save_pretrained`) plus an offline tokenizer.

Each `make_*` writes a folder that `engine.models.loader.load_model` and HF's
`from_pretrained` both read; keyword overrides go into the HF config. Weights are drawn with
a larger std than HF's default so that logits differ clearly between tokens and positions,
which keeps comparisons against HF sensitive.
"""
import os

import torch
from transformers import (
    AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
    MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
)

from tests.tokenizer_factory import CAUSAL_SPECIALS, make_tokenizer

VOCAB_SIZE = 128
INIT_STD = 0.1

LLAMA3_ROPE = {
    "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
    "high_freq_factor": 4.0, "original_max_position_embeddings": 32,
}


def _with_special_ids(fields):
    """Config fields plus the tokenizer's bos/eos/pad ids (overrides may still set them)."""
    tokenizer = make_tokenizer(CAUSAL_SPECIALS, fields["vocab_size"])
    ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return {**ids, **fields}


def _save(folder, model_cls, config, seed):
    """Build the HF model with seeded random weights and save it with its tokenizer."""
    tokenizer = make_tokenizer(CAUSAL_SPECIALS, config.vocab_size)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _decoder_config(config_cls, **overrides):
    """The Llama-family shape shared by Llama, Qwen2 and Mistral: 4 q heads over 2 kv heads."""
    fields = dict(
        vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        rms_norm_eps=1e-6, initializer_range=INIT_STD, tie_word_embeddings=False,
    )
    fields.update(overrides)
    return config_cls(**_with_special_ids(fields))


def make_gpt2(tmp_path, seed=0, **overrides):
    fields = dict(
        vocab_size=VOCAB_SIZE, n_positions=128, n_embd=64, n_layer=2, n_head=4,
        initializer_range=INIT_STD,
    )
    fields.update(overrides)
    config = GPT2Config(**_with_special_ids(fields))
    return _save(os.path.join(tmp_path, "gpt2"), GPT2LMHeadModel, config, seed)


def make_llama(tmp_path, seed=0, **overrides):
    """Llama 3 shape: GQA and llama3 rope scaling (override rope_parameters to change it)."""
    overrides.setdefault("rope_parameters", dict(LLAMA3_ROPE))
    config = _decoder_config(LlamaConfig, **overrides)
    return _save(os.path.join(tmp_path, "llama"), LlamaForCausalLM, config, seed)


def make_qwen2(tmp_path, seed=0, **overrides):
    """Qwen2: biases on q/k/v; pass tie_word_embeddings=True for the small tied variants."""
    config = _decoder_config(Qwen2Config, **overrides)
    return _save(os.path.join(tmp_path, "qwen2"), Qwen2ForCausalLM, config, seed)


def make_mistral(tmp_path, seed=0, **overrides):
    """Mistral with a sliding window shorter than max_position_embeddings, and a head_dim
    that differs from hidden_size / num_attention_heads."""
    overrides.setdefault("sliding_window", 64)
    overrides.setdefault("head_dim", 32)
    config = _decoder_config(MistralConfig, **overrides)
    return _save(os.path.join(tmp_path, "mistral"), MistralForCausalLM, config, seed)


MAKERS = {"gpt2": make_gpt2, "llama": make_llama, "qwen2": make_qwen2, "mistral": make_mistral}


def hf_model(path, dtype=torch.float32):
    """The HF reference model of a checkpoint folder, in eval mode."""
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


@torch.no_grad()
def hf_logits(model, token_ids):
    """HF logits [len, vocab] fp32 of one unpadded sequence."""
    ids = torch.tensor([token_ids], device=model.device)
    return model(input_ids=ids).logits[0].float()
