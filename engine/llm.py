"""LLM: batch generation over an Engine, the convenience most users start from."""
from numbers import Integral

from engine.engine import Engine
from engine.outputs import RequestError, RequestOutput


class LLM:
    """`LLM(model_path, **config).generate(prompts, params)`; a context manager (close())."""

    def __init__(self, model, **config):
        self.engine = Engine(model, **config)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts, params=None, use_tqdm=False) -> list[RequestOutput]:
        """Outputs in the order of `prompts`: a str, a list of str, or a list of token-id lists.

        `params` is one SamplingParams / MaskPredictParams for every prompt or a list, one per
        prompt; None uses the defaults for the model's kind. If any prompt is rejected,
        nothing of this call stays queued. If a request fails while running, the others
        still complete, then RequestError names it (its `outputs` holds them all).
        """
        prompts = _as_prompt_list(prompts)
        if isinstance(params, (list, tuple)):
            if len(params) != len(prompts):
                raise ValueError(f"got {len(params)} params for {len(prompts)} prompts; pass one or one per prompt")
            per_prompt = list(params)
        else:
            per_prompt = [params] * len(prompts)
        ids = []
        try:
            for prompt, p in zip(prompts, per_prompt):
                # generate returns final outputs only, so the engine need not build one per
                # step (measured on CPU: 4-5% of an AR batch of 16 or 64)
                ids.append(self.engine.add_request(prompt, p, output_kind="final_only"))
        except (TypeError, ValueError):
            for request_id in ids:
                self.engine.abort_request(request_id)
            raise
        outputs = self._run(ids, use_tqdm)
        failed = [(i, out) for i, out in enumerate(outputs) if out.finish_reason == "error"]
        if failed:
            i, out = failed[0]
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise RequestError(f"request {out.request_id} (prompt {i}) failed: {out.error}{more}", outputs)
        return outputs

    def _run(self, ids, use_tqdm):
        wanted, done = set(ids), {}
        bar = None
        if use_tqdm:
            from tqdm import tqdm

            bar = tqdm(total=len(ids), desc="generate")
        while len(done) < len(ids) and self.engine.has_unfinished():
            for out in self.engine.step():
                if out.finished and out.request_id in wanted:
                    done[out.request_id] = out
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
        return [done[i] for i in ids]

    def close(self) -> None:
        """Release the engine (and, with tensor parallelism, end its worker processes)."""
        if self.engine is not None:
            self.engine.close()
        self.engine = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _as_prompt_list(prompts) -> list:
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, (list, tuple)):
        if not prompts:
            raise ValueError("prompts is empty")
        if all(isinstance(t, Integral) and not isinstance(t, bool) for t in prompts):
            return [list(prompts)]  # one prompt given as token ids
        return list(prompts)
    raise TypeError(f"prompts must be a str, a list of str or a list of token-id lists, got {type(prompts).__name__}")
