"""What a mask-predict request shows after a pass: its RequestOutput and its texts.

The mask-predict side of engine/output_processor.py. The executor (engine/mask_predict.py)
records every pass into its host-side sequences; this turns them into outputs:
- a sequence's text is its target slots up to the first end-of-sequence token, every other
  token shown as itself (so a pass text shows the slots still masked); an output's text is
  decoded when it is read;
- return_pass_texts keeps the text after every pass, decoded right after the pass for every
  sequence in one call; if that call fails, sequence by sequence, and a sequence that cannot
  be decoded alone fails its request (the others go on);
- a failed request finishes with finish_reason "error", its first sequence's tokens and the
  message.
"""
import time
from functools import partial

from engine.detokenizer import batch_decode
from engine.output_processor import describe
from engine.outputs import RequestOutput


class MaskOutputProcessor:
    def __init__(self, tokenizer):
        self.tokenizer, self.eos_id = tokenizer, tokenizer.eos_token_id

    def output(self, request) -> RequestOutput:
        """The request's output after this pass. Its metrics are the request's own, kept up to
        date (as autoregressive outputs' are): the shown sequence's passes and pass texts."""
        seq, metrics = request.shown(), request.metrics
        finished = not request.unfinished
        metrics.generated_tokens, metrics.nfe = seq.length, len(seq.tokens_per_pass)
        metrics.tokens_per_pass = seq.tokens_per_pass
        if request.params.return_pass_texts:
            metrics.pass_texts = seq.pass_texts
        return RequestOutput(
            request.request_id, request.prompt, request.prompt_token_ids, seq.tokens,
            detokenize=partial(self._text, seq.tokens), finished=finished,
            finish_reason="length" if finished else None, metrics=metrics,
        )

    @staticmethod
    def failed(request, message: str) -> RequestOutput:
        request.metrics.finished_time = time.perf_counter()
        return RequestOutput(request.request_id, request.prompt, request.prompt_token_ids,
                             list(request.sequences[0].tokens), "", finished=True, finish_reason="error",
                             metrics=request.metrics, error=message)

    def decode_pass_texts(self, requests) -> None:
        """The text after this pass of every sequence that keeps pass texts (its last entry,
        None until now)."""
        pending = [seq for r in requests if r.params.return_pass_texts and r.error is None
                   for seq in r.sequences if seq.pass_texts and seq.pass_texts[-1] is None]  # ran this pass
        if not pending:
            return
        try:
            texts = self.texts([seq.tokens for seq in pending])
        except Exception:  # noqa: BLE001 - find the sequence(s) that cannot be decoded
            texts = []
            for seq in pending:
                try:
                    texts += self.texts([seq.tokens])
                except Exception as error:  # noqa: BLE001
                    seq.request.error = describe(error)
                    texts.append("")
        for seq, text in zip(pending, texts):
            seq.pass_texts[-1] = text

    def texts(self, sequences) -> list[str]:
        """The texts of target slots in one batched decode, each up to its first
        end-of-sequence token, special tokens (masks) shown."""
        eos = self.eos_id
        cut = [seq[: seq.index(eos)] if eos in seq else seq for seq in sequences]
        return batch_decode(self.tokenizer, cut, skip_special_tokens=False)

    def _text(self, tokens) -> str:
        return self.texts([tokens])[0]
