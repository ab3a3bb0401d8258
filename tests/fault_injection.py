"""Real failures planted in one request's path, and the checks the fault-isolation tests share.

A failure is planted where a real one would start, not in the isolation machinery: the
model's forward raises when a chosen token id is among its inputs (as an embedding lookup
beyond the table would), or the tokenizer's decoder raises on a chosen token id (as a
tokenizer that does not know an id the model produced may). Everything else runs as usual.
"""
from collections import Counter
from contextlib import contextmanager

import pytest

from engine import LLM


class PlantedFailure(RuntimeError):
    """The exception a planted failure raises, so a test can tell it from a real bug."""


@contextmanager
def poisoned_forward(model, token_id):
    """Within the block, the model's forward raises PlantedFailure whenever `token_id` is
    among its input ids."""
    forward = model.forward

    def poisoned(input_ids, *args, **kwargs):
        if bool((input_ids == token_id).any()):
            raise PlantedFailure(f"planted: token {token_id} in the forward's inputs")
        return forward(input_ids, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "forward", poisoned)
        yield


class _RaisingDecoder:
    """A tokenizer backend that raises on one token id and otherwise is the real one."""

    def __init__(self, backend, token_id):
        self._backend, self._token_id = backend, token_id

    def _check(self, sequences):
        if any(self._token_id in seq for seq in sequences):
            raise PlantedFailure(f"planted: the tokenizer cannot decode token {self._token_id}")

    def decode_batch(self, sequences, **kwargs):
        self._check(sequences)
        return self._backend.decode_batch(sequences, **kwargs)

    def decode(self, ids, **kwargs):
        self._check([ids])
        return self._backend.decode(ids, **kwargs)

    def __getattr__(self, name):
        return getattr(self._backend, name)


@contextmanager
def poisoned_decode(tokenizer, token_id):
    """Within the block, the tokenizer's (fast, Rust) decoder raises PlantedFailure on `token_id`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tokenizer, "_tokenizer", _RaisingDecoder(tokenizer.backend_tokenizer, token_id))
        yield


def run_to_end(engine, max_steps=10_000) -> dict:
    """Step until nothing is unfinished; {request_id: final output}. Each request finishes once."""
    finished = {}
    for _ in range(max_steps):
        if not engine.has_unfinished():
            return finished
        for out in engine.step():
            if out.finished:
                assert out.request_id not in finished, f"{out.request_id} finished twice"
                finished[out.request_id] = out
    raise AssertionError(f"the engine did not finish within {max_steps} steps: {engine.stats()}")


def alone(path, prompt, params, **config):
    """The request's output on a freshly built LLM, alone."""
    return LLM(path, **config).generate([prompt], params)[0]


def assert_kv_accounting(engine):
    """Each KV block's reference count is the number of unfinished requests holding it, and
    the free blocks are exactly the others (a causal LM's engine; a masked LM keeps no cache)."""
    executor = engine.executor
    block_manager = getattr(executor, "block_manager", None)
    if block_manager is None:
        return
    held = Counter(block for req in executor.requests.values() for block in req.block_table)
    assert block_manager.ref_counts == [held[b] for b in range(block_manager.num_blocks)]
    assert block_manager.num_free_blocks == block_manager.num_blocks - len(held)


def assert_no_kv_leak(engine):
    """Every KV block free and no reference held (blocks kept only by the prefix cache count as free)."""
    stats = engine.stats()
    assert stats["num_running"] == stats["num_waiting"] == 0, stats
    assert stats["num_free_kv_blocks"] == stats["num_kv_blocks"], stats
    assert_kv_accounting(engine)


def assert_serves_like_fresh(engine, path, prompt, params, **config):
    """The engine has nothing in flight, leaks no KV block, and serves `prompt` exactly as a
    freshly built engine with the same options does."""
    assert not engine.has_unfinished()
    assert_no_kv_leak(engine)
    rid = engine.add_request(prompt, params)
    out = run_to_end(engine)[rid]
    want = alone(path, prompt, params, **config)
    assert out.finish_reason == want.finish_reason != "error"
    assert out.token_ids == want.token_ids
    assert_no_kv_leak(engine)
