"""The step-level Engine: validates each request once, then delegates to one executor.

    Engine.add_request -> checks (params type, request id, prompt, token ids against the
                          model's vocabulary, the executor's fit check) -> executor.add
    Engine.step        -> executor.step -> outputs of every request that progressed (of an
                          output_kind "final_only" request, only when it finishes)

The executor is chosen by the checkpoint's kind: `AutoregressiveExecutor` for a causal LM
(engine/autoregressive.py), `MaskPredictExecutor` for a masked LM (engine/mask_predict.py),
and `SpeculativeExecutor` (engine/speculative/) for a causal LM with a speculative_config.
Both offer the same small interface: check_request, add, step, abort, has_unfinished,
stats, fail_all, and the attributes params_type and add_special_tokens.

A request that fails inside a step finishes with finish_reason "error"; the executor isolates
it from the others where it can, and an error it cannot attribute ends every request in
flight, never the engine (see `step`).

With tensor_parallel_size > 1 the model the executor gets is rank 0's TensorParallelModel
(engine.distributed): the Engine starts the worker processes and owns their end, `close()`
(also on garbage collection and at interpreter exit). A worker that dies makes every later
request fail with an error naming it.
"""
import itertools
import random
import time

import numpy as np
import torch

from engine.async_executor import AsyncAutoregressiveExecutor
from engine.autoregressive import AutoregressiveExecutor
from engine.backend import get_ops
from engine.config import EngineConfig
from engine.distributed.launch import start_tensor_parallel
from engine.host_memory import keep_heap
from engine.mask_predict import MaskPredictExecutor
from engine.models.loader import load_model
from engine.output_processor import describe
from engine.outputs import RequestOutput
from engine.params import MaskPredictParams, SamplingParams
from engine.profiling import enable_nvtx
from engine.speculative.draft_check import check_draft
from engine.speculative.executor import SpeculativeExecutor
from engine.validation import check_params_for_model, check_prompt_ids, check_real, check_tokenized_prompt

TOKEN_ID_SEQUENCES = (list, tuple, range, np.ndarray, torch.Tensor)  # what a token-id prompt may be
EXECUTORS = {"causal": AutoregressiveExecutor, "masked": MaskPredictExecutor}
ASYNC_EXECUTORS = {**EXECUTORS, "causal": AsyncAutoregressiveExecutor}  # mask-predict passes stay as they are
NEEDS = {SamplingParams: "a causal LM", MaskPredictParams: "a masked LM"}


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
        if cfg.enable_nvtx:
            enable_nvtx()
        keep_heap(cfg.device)  # on CPU activations come from malloc: no page faults in steady state
        if cfg.speculative_config is not None:
            check_draft(cfg.model, cfg.speculative_config)  # before any weights load
        self._tensor_parallel = None
        if cfg.tensor_parallel_size > 1:
            self.loaded, cfg = start_tensor_parallel(cfg)  # cfg: rank 0's, with the agreed KV blocks
            self._tensor_parallel = self.loaded.model
        else:
            self.loaded = load_model(cfg.model, cfg.dtype, cfg.device, cfg.kernel_backend, cfg.allow_pickle)
        self.tokenizer = self.loaded.tokenizer
        self.kind = self.loaded.kind
        try:
            executors = ASYNC_EXECUTORS if cfg.async_scheduling else EXECUTORS
            executor = SpeculativeExecutor if cfg.speculative_config is not None else executors[self.kind]
            self.executor = executor(self.loaded, cfg, get_ops(cfg.kernel_backend))
        except BaseException:
            self.close()
            raise
        self._seeds = random.Random(cfg.seed)  # seeds of requests that bring none
        self._ids = itertools.count()
        self._live: set[str] = set()  # ids of unfinished requests

    # ---- adding requests -------------------------------------------------------------

    def add_request(self, prompt, params=None, request_id=None, arrival_time=None, *, output_kind=None) -> str:
        """Validate and queue a request; returns its id. Nothing is queued when it raises.
        output_kind, when given, replaces the params' own for this request (LLM.generate asks
        for "final_only"); the caller's params object is not changed."""
        executor = self.executor
        params = executor.params_type() if params is None else params
        self._check_params_type(params)
        # The request's own params, validated: a caller who reuses and changes their params
        # object cannot reach a request already checked.
        params = params.request_copy(output_kind)
        check_params_for_model(params, self.loaded.vocab_size, has_tokenizer=self.tokenizer is not None,
                               eos_token_ids=self.loaded.eos_token_ids)
        request_id = self._new_request_id(request_id)
        text, token_ids = self._prompt_token_ids(prompt)
        executor.check_request(token_ids, params)
        arrival_time = check_real("arrival_time", arrival_time, allow_none=True)
        seed = params.seed if params.seed is not None else self._seeds.getrandbits(63)
        arrival_time = time.perf_counter() if arrival_time is None else arrival_time
        executor.add(request_id, text, token_ids, params, seed, arrival_time)
        self._live.add(request_id)
        return request_id

    def _check_params_type(self, params):
        if type(params) not in NEEDS:
            raise TypeError(f"params must be SamplingParams or MaskPredictParams, got {type(params).__name__}")
        expected = self.executor.params_type
        if not isinstance(params, expected):
            raise TypeError(
                f"{type(params).__name__} need {NEEDS[type(params)]}; "
                f"{self.loaded.architecture} is {NEEDS[expected]} (use {expected.__name__})"
            )

    def _new_request_id(self, request_id):
        if request_id is None:
            request_id = str(next(self._ids))
            while request_id in self._live:  # a caller's own id took this number
                request_id = str(next(self._ids))
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a str, got {type(request_id).__name__}")
        if request_id in self._live:
            raise ValueError(f"request_id {request_id!r} is already in use by an unfinished request")
        return request_id

    def _prompt_token_ids(self, prompt) -> tuple[str | None, list[int]]:
        """(prompt text or None, token ids). A str is tokenized as HF does by default for the
        model's kind (a causal LM with the tokenizer's special tokens; mask-predict adds its
        own template)."""
        vocab_size = self.loaded.vocab_size
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt is an empty string")
            if self.tokenizer is None:
                raise ValueError(f"a str prompt needs a tokenizer and {self.config.model!r} has none; pass token ids")
            try:
                prompt.encode("utf-8")
            except UnicodeEncodeError as e:  # a lone surrogate, which no tokenizer can encode
                raise ValueError(f"prompt is not valid Unicode text: {e.reason} at character {e.start}") from None
            ids = self.tokenizer.encode(prompt, add_special_tokens=self.executor.add_special_tokens)
            return prompt, check_tokenized_prompt(prompt, ids, vocab_size)
        if not isinstance(prompt, TOKEN_ID_SEQUENCES):
            raise TypeError(f"prompt must be a str or a list of token ids, got {type(prompt).__name__}")
        return None, check_prompt_ids(prompt, vocab_size)

    # ---- running -----------------------------------------------------------------------

    @torch.inference_mode()  # no autograd bookkeeping on any op: ~20% of a small op's cost on CPU
    def step(self) -> list[RequestOutput]:
        """Run one batch; an output for each request that produced a token (or a pass).

        An exception the executor could not pin on its requests finishes every request in
        flight with finish_reason "error" and the message; the engine stays usable.
        """
        try:
            outputs = self.executor.step()
        except Exception as error:  # noqa: BLE001 - the engine must survive any request
            outputs = self.executor.fail_all(describe(error))
        for out in outputs:
            if out.finished:
                self._live.discard(out.request_id)
        return outputs

    @torch.inference_mode()  # it may select the executor's state tensors, made in step()
    def abort_request(self, request_id: str) -> bool:
        """Drop an unfinished request and free everything it holds; False if it is unknown."""
        self._live.discard(request_id)
        return self.executor.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.executor.has_unfinished()

    def close(self) -> None:
        """End the tensor-parallel workers, if any (then the engine cannot step); idempotent."""
        if self._tensor_parallel is not None:
            self._tensor_parallel.close()

    def stats(self) -> dict:
        """The engine's counters: num_running, num_waiting, num_kv_blocks, num_free_kv_blocks
        (blocks held only by the prefix cache count as free), num_preemptions, and more per
        executor."""
        return self.executor.stats()
