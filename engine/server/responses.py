"""OpenAI response objects built from engine updates: completions and chat, whole or streamed.

A response format follows the choices of one HTTP request (prompts x n, in that order) and
what has been sent of each. A causal LM's stream chunks carry the text added since the last
chunk; a masked LM's carry its whole text after each refinement pass (masked slots shown as
the mask token), since a pass may change any slot. Logprobs follow OpenAI's two shapes:
`{tokens, token_logprobs, top_logprobs, text_offset}` for completions and
`{content: [{token, logprob, bytes, top_logprobs}]}` for chat; the engine gives the sampled
token's log-probability and the k most likely tokens' (at temperature 1).
"""
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from engine.server.engine_loop import Update


@dataclass
class ChoiceProgress:
    """One choice, and what has been sent of it."""

    index: int
    prompt_index: int
    echo: str = ""  # the prompt text, when the client asked for it to be echoed
    text_sent: int = 0  # characters of the engine's text already sent
    tokens_sent: int = 0
    text_offset: int = 0  # where the next token's text starts in the choice's text
    started: bool = False
    final: Update | None = None


@dataclass
class Delta:
    """What a choice gained since its last chunk."""

    text: str
    token_ids: list[int]
    logprobs: list[dict[int, float]] | None


class ResponseFormat(ABC):
    """The fields every response of one request shares, and its choices' progress."""

    object_name: str
    chunk_object_name: str

    def __init__(self, response_id: str, model: str, kind: str, request_ids: list[str], num_prompts: int,
                 token_texts: list[str], echoes: list[str] | None = None):
        self.id, self.model, self.kind, self.token_texts = response_id, model, kind, token_texts
        self.created = int(time.time())
        per_prompt = len(request_ids) // num_prompts
        echoes = echoes or [""] * num_prompts
        self.choices = {rid: ChoiceProgress(i, i // per_prompt, echoes[i // per_prompt], text_offset=len(echoes[i // per_prompt]))
                        for i, rid in enumerate(request_ids)}

    def _envelope(self, object_name: str, choices: list[dict], usage: dict | None = None) -> dict:
        body = {"id": self.id, "object": object_name, "created": self.created, "model": self.model,
                "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return body

    def usage(self) -> dict:
        """Token counts over the finished choices; a prompt counts once, not once per choice."""
        finals = [c for c in self.choices.values() if c.final is not None]
        prompt = sum({c.prompt_index: c.final.num_prompt_tokens for c in finals}.values())
        completion = sum(len(c.final.token_ids) for c in finals)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _advance(self, update: Update) -> tuple[ChoiceProgress, Delta]:
        choice = self.choices[update.request_id]
        if update.finished:
            choice.final = update
        if self.kind == "masked":
            text = choice.echo + update.text  # every pass may rewrite any slot: send it whole
        else:
            text = update.text[choice.text_sent:]
            choice.text_sent = len(update.text)
            if not choice.started:
                text = choice.echo + text
        logprobs = None if update.logprobs is None else update.logprobs[choice.tokens_sent:]
        delta = Delta(text, update.token_ids[choice.tokens_sent:], logprobs)
        choice.tokens_sent = len(update.token_ids)
        return choice, delta

    def chunk(self, update: Update) -> dict | None:
        """The stream chunk for this update, or None when it adds nothing to send (text held
        back while it may still become a stop string)."""
        choice, delta = self._advance(update)
        if not delta.text and not delta.logprobs and not update.finished:
            return None
        choice.started = True
        return self._envelope(self.chunk_object_name, [self._chunk_choice(choice, delta, update.finish_reason)])

    def usage_chunk(self) -> dict:
        return self._envelope(self.chunk_object_name, [], self.usage())

    def whole(self, finals: dict[str, Update]) -> dict:
        """The non-streamed response from every choice's final update."""
        choices = []
        for request_id, choice in self.choices.items():
            u = choice.final = finals[request_id]
            delta = Delta(choice.echo + u.text, u.token_ids, u.logprobs)
            choices.append(self._whole_choice(choice, delta, u.finish_reason))
        return self._envelope(self.object_name, choices, self.usage())

    def opening_chunks(self) -> list[dict]:
        """Chunks sent before any output (chat announces the assistant's role)."""
        return []

    def _alternatives(self, alternatives: dict[int, float]) -> list[tuple[str, float]]:
        """A token's alternatives as (text, logprob), most likely first."""
        ranked = sorted(alternatives.items(), key=lambda item: -item[1])
        return [(self.token_texts[t], lp) for t, lp in ranked]

    @abstractmethod
    def _chunk_choice(self, choice: ChoiceProgress, delta: Delta, finish_reason: str | None) -> dict: ...

    @abstractmethod
    def _whole_choice(self, choice: ChoiceProgress, delta: Delta, finish_reason: str | None) -> dict: ...


class CompletionFormat(ResponseFormat):
    object_name = chunk_object_name = "text_completion"

    def _logprobs(self, choice: ChoiceProgress, delta: Delta) -> dict | None:
        if delta.logprobs is None:
            return None
        tokens = [self.token_texts[t] for t in delta.token_ids]
        offsets = []
        for token in tokens:
            offsets.append(choice.text_offset)
            choice.text_offset += len(token)
        return {
            "tokens": tokens,
            "token_logprobs": [lp[t] for t, lp in zip(delta.token_ids, delta.logprobs)],
            "top_logprobs": [dict(self._alternatives(lp)) for lp in delta.logprobs],
            "text_offset": offsets,
        }

    def _chunk_choice(self, choice, delta, finish_reason):
        return {"index": choice.index, "text": delta.text, "logprobs": self._logprobs(choice, delta),
                "finish_reason": finish_reason}

    _whole_choice = _chunk_choice


class ChatFormat(ResponseFormat):
    object_name, chunk_object_name = "chat.completion", "chat.completion.chunk"

    def __init__(self, *args, top_logprobs: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.top_logprobs = top_logprobs

    def _entry(self, text: str, logprob: float) -> dict:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def _logprobs(self, delta: Delta) -> dict | None:
        if delta.logprobs is None:
            return None
        content = []
        for t, lp in zip(delta.token_ids, delta.logprobs):
            entry = self._entry(self.token_texts[t], lp[t])
            entry["top_logprobs"] = [self._entry(*alt) for alt in self._alternatives(lp)[: self.top_logprobs]]
            content.append(entry)
        return {"content": content}

    def opening_chunks(self):
        return [self._envelope(self.chunk_object_name, [
            {"index": c.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        ]) for c in self.choices.values()]

    def _chunk_choice(self, choice, delta, finish_reason):
        return {"index": choice.index, "delta": {"content": delta.text} if delta.text else {},
                "logprobs": self._logprobs(delta), "finish_reason": finish_reason}

    def _whole_choice(self, choice, delta, finish_reason):
        return {"index": choice.index, "message": {"role": "assistant", "content": delta.text},
                "logprobs": self._logprobs(delta), "finish_reason": finish_reason}
