"""Incremental detokenization of a whole step's new tokens in two batched decode calls.

Each request keeps a window of ids: [prefix_offset, read_offset) is text already emitted,
[read_offset, end) is new. The new text is decode(window) minus decode(prefix part), so a
token whose text depends on its neighbour (a leading space, a multi-byte character) comes
out right; an incomplete UTF-8 character waits for the next token, and the window keeps
reaching back past tokens that decode to nothing (skipped special tokens), so the separator
before the next word is not lost. Decoding every request's
window in one call of the fast tokenizer's Rust backend (with the same clean-up HF's decode
applies) keeps per-token Python overhead off the decode loop.
"""


def batch_decode(tokenizer, sequences, skip_special_tokens=True):
    """HF `batch_decode` in one call of a fast tokenizer's Rust backend, same clean-up."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (pure Python) tokenizer
        return tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)
    texts = backend.decode_batch(sequences, skip_special_tokens=skip_special_tokens)
    if tokenizer.clean_up_tokenization_spaces:
        texts = [tokenizer.clean_up_tokenization(t) for t in texts]
    return texts


class IncrementalDetokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def update(self, requests) -> None:
        """Extend each request's `text` by the characters of its newly generated tokens."""
        if self.tokenizer is None or not requests:
            return
        prefixes, fulls = [], []
        for req in requests:
            ids = req.output_token_ids
            prefixes.append(ids[req.detok_prefix_offset : req.detok_read_offset])
            fulls.append(ids[req.detok_prefix_offset :])
        decoded = batch_decode(self.tokenizer, prefixes + fulls)
        for req, prefix, full in zip(requests, decoded[: len(requests)], decoded[len(requests):]):
            if full.endswith("\ufffd"):
                continue
            new_text = full[len(prefix):]
            req.text += new_text
            if new_text:  # tokens without text (skipped specials) stay in the window as context
                req.detok_prefix_offset = req.detok_read_offset
            req.detok_read_offset = len(req.output_token_ids)
