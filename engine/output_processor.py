"""After an autoregressive step: append the sampled tokens, decide who finished, build outputs.

A request stops ("stop") at an end-of-sequence token (unless ignore_eos) or one of its
stop_token_ids, once min_tokens are generated; or when its text contains one of its stop
strings, which is cut off with everything after it; otherwise it ends ("length") at
max_tokens. Only requests with stop strings are detokenized every step (their text is
needed); the others' text is decoded when someone reads it (RequestOutput.text), and a
running request with stop strings shows its text without the tail that could still become
the start of a stop string.
"""
from engine.detokenizer import IncrementalDetokenizer, TextAt
from engine.outputs import RequestOutput
from engine.request import Request


def describe(error: BaseException) -> str:
    """The message a failed request carries: the exception's type and text."""
    return f"{type(error).__name__}: {error}"


class OutputProcessor:
    def __init__(self, detokenizer: IncrementalDetokenizer, eos_token_ids: list[int]):
        self.detokenizer = detokenizer
        self.eos_token_ids = eos_token_ids  # shared with the sampler, which bans them before min_tokens

    def process(self, requests: list[Request], tokens: list[int], logprobs: list, now: float):
        """-> (an output per request that wants one now, the requests that finished): every
        request with output_kind "cumulative", and a "final_only" one when it finishes."""
        for req, token, lp in zip(requests, tokens, logprobs):
            req.append_token(token, lp, now)
        texts_before = {req: len(req.text) for req in requests if req.params.stop}
        failed = self._advance_apart(list(texts_before)) if texts_before else {}
        outputs, finished = [], []
        for req, token in zip(requests, tokens):
            if req in failed:
                req.finish("error", now, failed[req])
            else:
                reason = self._finish_reason(req, token, texts_before.get(req, 0))
                if reason is not None:
                    req.finish(reason, now)
            if req.finish_reason is not None:
                finished.append(req)
                outputs.append(self.output(req))
            elif req.params.output_kind == "cumulative":
                outputs.append(self.output(req))
        return outputs, finished

    def _advance_apart(self, requests) -> dict:
        """Detokenize in one call; if that fails, one request at a time, and return the
        requests that fail alone with their error."""
        try:
            self.detokenizer.advance(requests)
            return {}
        except Exception:  # noqa: BLE001 - isolate whichever request it was
            failed = {}
            for req in requests:
                try:
                    self.detokenizer.advance([req])
                except Exception as error:  # noqa: BLE001
                    failed[req] = describe(error)
            return failed

    def _finish_reason(self, req: Request, token: int, num_chars_before: int) -> str | None:
        p = req.params
        if req.num_generated >= p.min_tokens:
            if (token in self.eos_token_ids and not p.ignore_eos) or token in p.stop_token_ids:
                return "stop"
            if p.stop:
                # Only text added by this token can complete a match.
                start = max(0, num_chars_before - max(map(len, p.stop)) + 1)
                hits = [i for i in (req.text.find(s, start) for s in p.stop) if i >= 0]
                if hits:
                    req.text = req.text[: min(hits)]
                    return "stop"
        return "length" if req.num_generated >= p.max_tokens else None

    def output(self, req: Request) -> RequestOutput:
        if req.params.stop:
            text, detokenize = req.text, None
            if req.finish_reason is None:  # hold back what could still start a stop string
                text = text[: max(0, len(text) - max(map(len, req.params.stop)) + 1)]
        else:
            text, detokenize = None, TextAt(self.detokenizer, req, req.num_generated)
        return RequestOutput(
            request_id=req.request_id, prompt=req.prompt, prompt_token_ids=req.prompt_token_ids,
            token_ids=req.all_token_ids[req.num_prompt_tokens:], text=text, detokenize=detokenize,
            finished=req.finish_reason is not None, finish_reason=req.finish_reason,
            metrics=req.metrics, logprobs=None if req.logprobs is None else list(req.logprobs),
            error=req.error,
        )
