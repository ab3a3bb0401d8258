"""The step-level Engine and the batch convenience LLM.

Engine loads a checkpoint and serves requests one step at a time: `add_request` validates
and queues, `step` runs one batch and returns what progressed. A causal LM decodes
autoregressively (scheduler -> runner -> sampler); a masked LM is served by the
mask-predict executor, which refines all its requests one pass per step.
"""
import itertools
import random
import time
from numbers import Integral

from engine.backend import get_ops
from engine.config import EngineConfig
from engine.detokenizer import IncrementalDetokenizer
from engine.kv_cache import BlockManager, num_blocks_for_budget
from engine.models.loader import load_model
from engine.outputs import RequestOutput
from engine.params import MaskPredictParams, SamplingParams
from engine.profiling import ranged
from engine.request import Request
from engine.runner import ModelRunner
from engine.sampler import Sampler
from engine.validation import check_token_ids
from engine.scheduler import Scheduler

PARAMS_FOR_KIND = {"causal": SamplingParams, "masked": MaskPredictParams}
KIND_NAMES = {"causal": "a causal LM", "masked": "a masked LM"}


class Engine:
    """`Engine(model_path, **config)` or `Engine(EngineConfig(...))`."""

    def __init__(self, model, **config):
        if isinstance(model, EngineConfig):
            if config:
                raise TypeError("pass either an EngineConfig or keyword options, not both")
            self.config = model
        else:
            self.config = EngineConfig.from_kwargs(model, **config)
        cfg = self.config
        self.ops = get_ops(cfg.kernel_backend)
        self.loaded = load_model(cfg.model, cfg.dtype, cfg.device, cfg.kernel_backend, cfg.allow_pickle)
        self.tokenizer = self.loaded.tokenizer
        self.kind = self.loaded.kind
        self._seed_rng = random.Random(cfg.seed)
        self._ids = itertools.count()
        self._live: dict[str, Request | None] = {}  # unfinished request ids (None: mask-predict)
        if self.kind == "masked":
            from engine.mask_predict import MaskPredictExecutor

            self.executor = MaskPredictExecutor(self.loaded, cfg, self.ops)
        else:
            self._init_causal()

    def _init_causal(self):
        cfg, model = self.config, self.loaded.model
        dtype = next(model.parameters()).dtype
        self.max_model_len = self.loaded.max_positions
        num_blocks = num_blocks_for_budget(cfg, model, dtype, self.max_model_len)
        self.block_manager = BlockManager(num_blocks, cfg.block_size, cfg.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, cfg.max_num_seqs, cfg.max_num_batched_tokens)
        self.runner = ModelRunner(model, cfg, num_blocks, dtype, self.max_model_len)
        self.sampler = Sampler(self.ops, self.loaded.eos_token_ids)
        self.detokenizer = IncrementalDetokenizer(self.tokenizer)

    # ---- adding requests -------------------------------------------------------------

    def add_request(self, prompt, params=None, request_id=None, arrival_time=None) -> str:
        """Validate and queue a request; returns its id. Nothing is queued when it raises."""
        params = PARAMS_FOR_KIND[self.kind]() if params is None else params
        self._check_params_type(params)
        request_id = self._new_request_id(request_id)
        text, token_ids = self._prompt_token_ids(prompt)
        arrival_time = time.perf_counter() if arrival_time is None else arrival_time
        if self.kind == "masked":
            self.executor.add(request_id, text, token_ids, params, arrival_time)
            self._live[request_id] = None
            return request_id
        self._check_fits(len(token_ids), params.max_tokens)
        seed = params.seed if params.seed is not None else self._seed_rng.getrandbits(63)
        req = Request(request_id, text, token_ids, params, seed, arrival_time)
        self.scheduler.add(req)
        self._live[request_id] = req
        return request_id

    def _check_params_type(self, params):
        if not isinstance(params, (SamplingParams, MaskPredictParams)):
            raise TypeError(f"params must be SamplingParams or MaskPredictParams, got {type(params).__name__}")
        expected = PARAMS_FOR_KIND[self.kind]
        if not isinstance(params, expected):
            needs = "causal" if isinstance(params, SamplingParams) else "masked"
            raise TypeError(
                f"{type(params).__name__} need {KIND_NAMES[needs]}; "
                f"{self.loaded.architecture} is {KIND_NAMES[self.kind]} (use {expected.__name__})"
            )

    def _new_request_id(self, request_id):
        if request_id is None:
            request_id = next(i for i in map(str, self._ids) if i not in self._live)
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a str, got {type(request_id).__name__}")
        if request_id in self._live:
            raise ValueError(f"request_id {request_id!r} is already in use by an unfinished request")
        return request_id

    def _prompt_token_ids(self, prompt) -> tuple[str | None, list[int]]:
        """(prompt text or None, token ids). A str is tokenized like HF does by default for a
        causal LM (with the tokenizer's special tokens); mask-predict adds its own template."""
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt is an empty string")
            if self.tokenizer is None:
                raise ValueError(f"a str prompt needs a tokenizer and {self.config.model!r} has none; pass token ids")
            ids = self.tokenizer.encode(prompt, add_special_tokens=self.kind == "causal")
            if not ids:
                raise ValueError(f"prompt {prompt!r} tokenizes to no tokens")
            return prompt, ids
        if isinstance(prompt, (list, tuple)):
            if not prompt:
                raise ValueError("prompt is an empty list of token ids")
            return None, check_token_ids("prompt token ids", prompt, self.loaded.vocab_size)
        raise TypeError(f"prompt must be a str or a list of token ids, got {type(prompt).__name__}")

    def _check_fits(self, prompt_len, max_tokens):
        total = prompt_len + max_tokens
        if total > self.max_model_len:
            raise ValueError(
                f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) = {total} exceeds the "
                f"model's context of {self.max_model_len} positions"
            )
        bm = self.block_manager
        if bm.blocks_for(total) > bm.num_blocks:
            raise ValueError(
                f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) needs {bm.blocks_for(total)} "
                f"KV blocks but the cache has {bm.num_blocks}; raise num_kv_blocks or the memory budget"
            )

    # ---- running -----------------------------------------------------------------------

    def stats(self) -> dict:
        """The engine's counters: requests running and waiting, KV blocks (blocks held only
        by the prefix cache count as free) and preemptions so far."""
        if self.kind == "masked":
            ex = self.executor
            return {"num_running": len(ex.running), "num_waiting": len(ex.waiting), "num_kv_blocks": 0,
                    "num_free_kv_blocks": 0, "num_preemptions": 0}
        s, bm = self.scheduler, self.block_manager
        return {"num_running": len(s.running), "num_waiting": len(s.waiting), "num_kv_blocks": bm.num_blocks,
                "num_free_kv_blocks": bm.num_free_blocks, "num_preemptions": s.num_preemptions}

    def has_unfinished(self) -> bool:
        if self.kind == "masked":
            return self.executor.has_unfinished()
        return self.scheduler.has_unfinished()

    def abort_request(self, request_id: str) -> bool:
        """Drop an unfinished request and free everything it holds; False if it is unknown."""
        if request_id not in self._live:
            return False
        req = self._live.pop(request_id)
        if self.kind == "masked":
            return self.executor.abort(request_id)
        self.scheduler.finish(req)
        req.finish_reason = "abort"
        return True

    def step(self) -> list[RequestOutput]:
        """Run one batch; an output for each request that produced a token (or a pass)."""
        if self.kind == "masked":
            outputs = self.executor.step()
            for out in outputs:
                if out.finished:
                    self._live.pop(out.request_id, None)
            return outputs
        with ranged("schedule"):
            batch = self.scheduler.schedule()
        if not len(batch):
            return []
        now = time.perf_counter()
        for req in batch.requests:
            if req.metrics.first_scheduled_time is None:
                req.metrics.first_scheduled_time = now
        logits = self.runner.run(batch)
        self.scheduler.update(batch)
        sampling = [req for req in batch.requests if req.num_computed_tokens == req.num_tokens]
        if not sampling:
            return []
        with ranged("sample"):
            tokens, logprobs = self.sampler(logits, sampling)
        now = time.perf_counter()
        chars_before = [len(req.text) for req in sampling]
        for req, token, lp in zip(sampling, tokens, logprobs):
            self._append_token(req, token, lp, now)
        self.detokenizer.update(sampling)
        for req, token, num_chars in zip(sampling, tokens, chars_before):
            reason = self._finish_reason(req, token, num_chars)
            if reason is not None:
                req.finish_reason = reason
                req.metrics.finished_time = now
                self.scheduler.finish(req)
                self._live.pop(req.request_id, None)
        return [self._output(req) for req in sampling]

    @staticmethod
    def _append_token(req: Request, token: int, logprobs, now: float):
        req.output_token_ids.append(token)
        m = req.metrics
        m.generated_tokens += 1
        if m.first_token_time is None:
            m.first_token_time = now
        if logprobs is not None:
            req.logprobs.append(logprobs)

    def _finish_reason(self, req: Request, token: int, num_chars_before: int) -> str | None:
        p = req.params
        if req.num_generated >= p.min_tokens:
            if (token in self.sampler.eos_token_ids and not p.ignore_eos) or token in p.stop_token_ids:
                return "stop"
            if p.stop:
                # Only text added by this token can complete a match.
                start = max(0, num_chars_before - max(map(len, p.stop)) + 1)
                hits = [i for i in (req.text.find(s, start) for s in p.stop) if i >= 0]
                if hits:
                    req.text = req.text[: min(hits)]
                    return "stop"
        return "length" if req.num_generated >= p.max_tokens else None

    @staticmethod
    def _output(req: Request) -> RequestOutput:
        text = req.text
        if req.params.stop and req.finish_reason is None:
            # Hold back what could still become the start of a stop string.
            text = text[: max(0, len(text) - max(map(len, req.params.stop)) + 1)]
        return RequestOutput(
            request_id=req.request_id, prompt=req.prompt, prompt_token_ids=req.prompt_token_ids,
            token_ids=list(req.output_token_ids), text=text, finished=req.finish_reason is not None,
            finish_reason=req.finish_reason, metrics=req.metrics,
            logprobs=None if req.logprobs is None else list(req.logprobs),
        )


class LLM:
    """`LLM(model_path, **config).generate(prompts, params)`: batch generation over an Engine."""

    def __init__(self, model, **config):
        self.engine = Engine(model, **config)

    def close(self) -> None:
        """Release the engine (and, with tensor parallelism, end its worker processes)."""
        self.engine = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts, params=None, use_tqdm=False) -> list[RequestOutput]:
        """Outputs in the order of `prompts`: a str, a list of str, or a list of token-id lists.

        `params` is one SamplingParams / MaskPredictParams for every prompt or a list, one per
        prompt; None uses the defaults for the model's kind. If any prompt is rejected,
        nothing of this call stays queued.
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
                ids.append(self.engine.add_request(prompt, p))
        except (TypeError, ValueError):
            for request_id in ids:
                self.engine.abort_request(request_id)
            raise
        return self._run(ids, use_tqdm)

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
