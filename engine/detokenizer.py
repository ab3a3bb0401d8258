"""Incremental detokenization of a whole step's new tokens in two batched decode calls.

Each request keeps a window of ids: [prefix_offset, read_offset) is text already emitted,
[read_offset, end) is new. The new text is decode(window) minus decode(prefix part), so a
token whose text depends on its neighbour (a leading space, a multi-byte character) comes
out right; an incomplete UTF-8 character waits for the next token. Decoding every request's
window in one `batch_decode` call keeps per-token Python overhead off the decode loop.
"""


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
        decode = self.tokenizer.batch_decode
        for req, prefix, full in zip(requests, decode(prefixes, skip_special_tokens=True),
                                     decode(fulls, skip_special_tokens=True)):
            if full.endswith("\ufffd"):
                continue
            req.text += full[len(prefix):]
            req.detok_prefix_offset, req.detok_read_offset = req.detok_read_offset, len(req.output_token_ids)
