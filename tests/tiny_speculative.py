"""Tiny random target / draft checkpoints that share one tokenizer, for speculative decoding.

The tokenizer holds both the causal specials (<s> </s> <unk> <pad>) and the masked LM's
([CLS] [SEP] [MASK]), so a causal target, a causal draft and a BERT draft all have the
same token ids, as a real speculative pair must. `vocab_size` sets the models' embedding
rows (the tokenizer's extra words are then never used as ids); the chi-square tests use a
small one so every token's probability is measurable.
"""
import os

import torch
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from tests.tokenizer_factory import BERT_SPECIALS, CAUSAL_SPECIALS, make_tokenizer

SHARED_SPECIALS = {**BERT_SPECIALS, **CAUSAL_SPECIALS}  # the causal names win for pad/unk


def _save(folder, model, tokenizer):
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


def shared_tokenizer():
    return make_tokenizer(SHARED_SPECIALS, vocab_size=128)


def _special_ids(tokenizer):
    return dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def make_causal(root, name, arch="gpt2", vocab_size=128, layers=2, hidden=64, seed=0, init_std=0.1):
    """A random GPT-2 or Llama causal LM (the target, or a smaller causal draft)."""
    tokenizer = shared_tokenizer()
    torch.manual_seed(seed)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=vocab_size, n_positions=128, n_embd=hidden, n_layer=layers, n_head=4,
                            initializer_range=init_std, **_special_ids(tokenizer))
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=128, initializer_range=init_std, tie_word_embeddings=False,
                             **_special_ids(tokenizer))
        model = LlamaForCausalLM(config)
    return _save(os.path.join(root, name), model.eval(), tokenizer)


def make_masked(root, name, vocab_size=128, seed=0, max_positions=64, init_std=0.3):
    """A random BERT masked LM drafting for the causal models above."""
    tokenizer = shared_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=max_positions, initializer_range=init_std,
                        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id)
    return _save(os.path.join(root, name), BertForMaskedLM(config).eval(), tokenizer)


def make_truncated(target, root, name, layers=1):
    """The target's first `layers` layers with its embeddings and head: a draft that agrees
    with the target often but not always (as a distilled draft would)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    blocks = model.transformer.h if hasattr(model, "transformer") else model.model.layers
    del blocks[layers:]
    model.config.num_hidden_layers = layers  # GPT-2 reads n_layer through this alias
    return _save(os.path.join(root, name), model.eval(), shared_tokenizer())
