"""Incremental detokenization: a request's new tokens to text in one batched decode call.

Each request keeps a window of ids: [prefix_offset, read_offset) is text already emitted,
[read_offset, end) is new. The new text is decode(window) minus decode(prefix part), so a
token whose text depends on its neighbour (a leading space, a multi-byte character) comes
out right; an incomplete UTF-8 character waits for the next token, and the window keeps
reaching back past tokens that decode to nothing (skipped special tokens), so the separator
before the next word is not lost. Decoding every request's
window in one call of the fast tokenizer's Rust backend (with the same clean-up HF's decode
applies) keeps per-token Python overhead off the decode loop.

The engine advances a request's text only when it is needed: every step for a request with
stop strings, otherwise when an output's text is read (a `TextAt` behind RequestOutput.text),
which catches up over all tokens since the last read in one window. `decode_texts` resolves
the texts of a whole step's outputs in one batched call (what a server streaming every
request every step wants).
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

    def advance(self, requests, upto=None) -> None:
        """Extend each request's `text` by the characters of its output tokens up to upto[i]
        (default: all of them), in one batched decode call."""
        if self.tokenizer is None or not requests:
            return
        prefixes, fulls = [], []
        for i, req in enumerate(requests):
            base = req.num_prompt_tokens
            end = len(req.all_token_ids) if upto is None else base + upto[i]
            ids = req.all_token_ids
            prefixes.append(ids[base + req.detok_prefix_offset : base + req.detok_read_offset])
            fulls.append(ids[base + req.detok_prefix_offset : end])
        decoded = batch_decode(self.tokenizer, prefixes + fulls)
        for i, (req, prefix, full) in enumerate(zip(requests, decoded[: len(requests)], decoded[len(requests):])):
            if full.endswith("\ufffd"):  # an incomplete UTF-8 character waits for its next token
                continue
            new_text = full[len(prefix):]
            req.text += new_text
            if new_text:  # tokens without text (skipped specials) stay in the window as context
                req.detok_prefix_offset = req.detok_read_offset
            req.detok_read_offset = req.num_generated if upto is None else upto[i]

    def text_at(self, req, num_generated: int) -> str:
        """The request's text after its first `num_generated` output tokens."""
        if self.tokenizer is None:
            return ""
        if req.detok_read_offset > num_generated:  # an old output read late: decode it afresh
            base = req.num_prompt_tokens
            return batch_decode(self.tokenizer, [req.all_token_ids[base : base + num_generated]])[0]
        if req.detok_read_offset < num_generated:
            self.advance([req], [num_generated])
        return req.text


class TextAt:
    """The text of `request` after its first `num_generated` output tokens, decoded when called."""

    __slots__ = ("detokenizer", "request", "num_generated")

    def __init__(self, detokenizer: IncrementalDetokenizer, request, num_generated: int):
        self.detokenizer, self.request, self.num_generated = detokenizer, request, num_generated

    def __call__(self) -> str:
        return self.detokenizer.text_at(self.request, self.num_generated)


def decode_texts(outputs) -> None:
    """Decode the lazy texts of many outputs with one batched call per detokenizer; reading
    `out.text` afterwards costs nothing. Outputs whose text is known are left alone."""
    behind: dict[IncrementalDetokenizer, dict] = {}
    for out in outputs:
        lazy = out._detokenize
        if out._text is None and isinstance(lazy, TextAt) and lazy.request.detok_read_offset < lazy.num_generated:
            wanted = behind.setdefault(lazy.detokenizer, {})
            wanted[lazy.request] = max(wanted.get(lazy.request, 0), lazy.num_generated)
    for detokenizer, wanted in behind.items():
        detokenizer.advance(list(wanted), list(wanted.values()))
