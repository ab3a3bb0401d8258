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


class IncrementalDetokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._backend = getattr(tokenizer, "backend_tokenizer", None)

    def _decode(self, sequences):
        if self._backend is None:  # a slow (pure Python) tokenizer
            return self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        texts = self._backend.decode_batch(sequences, skip_special_tokens=True)
        if self.tokenizer.clean_up_tokenization_spaces:
            texts = [self.tokenizer.clean_up_tokenization(t) for t in texts]
        return texts

    def update(self, requests) -> None:
        """Extend each request's `text` by the characters of its newly generated tokens."""
        if self.tokenizer is None or not requests:
            return
        prefixes, fulls = [], []
        for req in requests:
            ids = req.output_token_ids
            prefixes.append(ids[req.detok_prefix_offset : req.detok_read_offset])
            fulls.append(ids[req.detok_prefix_offset :])
        for req, prefix, full in zip(requests, self._decode(prefixes), self._decode(fulls)):
            if full.endswith("\ufffd"):
                continue
            new_text = full[len(prefix):]
            req.text += new_text
            if new_text:  # tokens without text (skipped specials) stay in the window as context
                req.detok_prefix_offset = req.detok_read_offset
            req.detok_read_offset = len(req.output_token_ids)
