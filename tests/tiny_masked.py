"""Tiny random BERT / RoBERTa / DistilBERT masked-LM checkpoints for tests (no hub access).

Each factory writes an HF folder (config.json, model.safetensors, tokenizer) with
`save_pretrained`. Weights are drawn with a large init range so the MLM head's
distributions are peaked: greedy choices and confidence orderings are then decided by
margins far above fp32 rounding, and engine-vs-HF comparisons are not coin flips.
"""
import torch
from transformers import (
    BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM, RobertaConfig,
    RobertaForMaskedLM,
)

from tests.tokenizer_factory import BERT_SPECIALS, ROBERTA_SPECIALS, make_tokenizer

VOCAB = 96


FAMILIES = ("bert", "roberta", "distilbert")


def _config(family, max_positions, tokenizer):
    common = dict(vocab_size=VOCAB, initializer_range=0.3, tie_word_embeddings=True,
                  pad_token_id=tokenizer.pad_token_id)
    if family == "distilbert":
        return DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                max_position_embeddings=max_positions, **common)
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    if family == "roberta":
        # fairseq numbering: positions start at pad + 1, so pad + 1 more rows than tokens served
        return RobertaConfig(max_position_embeddings=max_positions + tokenizer.pad_token_id + 1,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             type_vocab_size=1, **shape, **common)
    return BertConfig(max_position_embeddings=max_positions, **shape, **common)


def make_masked_lm(family, path, max_positions=64, seed=0):
    """Save a tiny random `*ForMaskedLM` of `family` and its tokenizer to `path`; returns path.

    Token ids: the tokenizer's specials first ([CLS] [SEP] [MASK] [PAD] [UNK] for BERT and
    DistilBERT, <s> </s> <mask> <pad> <unk> for RoBERTa), then words, then filler words.
    """
    torch.manual_seed(seed)
    specials = ROBERTA_SPECIALS if family == "roberta" else BERT_SPECIALS
    tokenizer = make_tokenizer(specials, vocab_size=VOCAB)
    config = _config(family, max_positions, tokenizer)
    model_cls = {"bert": BertForMaskedLM, "roberta": RobertaForMaskedLM, "distilbert": DistilBertForMaskedLM}[family]
    model = model_cls(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
