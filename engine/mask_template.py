"""The sequence every mask-predict pass reads: `[CLS] prompt [MASK]*N [SEP]` for BERT,
`<s> prompt <mask>*N </s>` for RoBERTa -- the tokenizer's cls and sep tokens, falling back to
its bos and eos tokens, around the prompt and N mask tokens."""


def template_ids(tokenizer, owner: str) -> tuple[int, int, int]:
    """(cls, sep, mask) token ids; ValueError naming `owner` (who needs them) when the
    tokenizer lacks one."""
    if tokenizer is None:
        raise ValueError(f"{owner} needs the checkpoint's tokenizer (for its mask/cls/sep ids)")
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    ids = {"cls (or bos)": cls_id, "sep (or eos)": sep_id, "mask": tokenizer.mask_token_id}
    for name, value in ids.items():
        if value is None:
            raise ValueError(f"the tokenizer defines no {name} token, which {owner}'s template needs")
    return cls_id, sep_id, tokenizer.mask_token_id
