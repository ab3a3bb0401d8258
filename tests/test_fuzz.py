"""Fuzz: random requests, parameters, lifecycles and tight caches never break the engine.

For each tiny checkpoint (GPT-2, Llama, BERT), rounds run until a wall-clock budget is
spent; every round has its own seed (shown with the last operations when an invariant
fails, so a round can be replayed). A round builds an engine with a random small
configuration (block size, a few KV blocks, max_num_seqs and max_num_batched_tokens down to
1, prefix caching and async scheduling on or off) and applies a random sequence of operations:

  add     a prompt (str or token ids, in and out of the vocabulary, empty, beyond the
          context, of every container type) with params whose fields are valid or wild
          (numpy ints and floats, bools, huge, negative, NaN and infinite numbers, empty and
          huge lists, wrong types), a request id that is fresh, a live one, a finished one or
          not a str, and an arrival time that is valid or not;
  step    one or a few steps;
  abort   a live, a finished or an unknown id;
  change  the caller's params object of a live request (the engine must not see it).

In a third of the rounds a failure is planted too: the forward raises on one token id, and
now and then a whole step raises (an error nobody can be blamed for).

Invariants, asserted after every operation, at the end of each round and after the run:
 1. add_request either raises ValueError or TypeError and queues nothing (the engine's
    counts are unchanged), or returns the request's id (the one given, or a fresh one);
    params that fail construction, a bad prompt, a live or non-str id, a bad arrival time
    are always refused;
 2. no other exception escapes add_request, step or abort_request;
 3. a step returns at most one output per request, only for unfinished requests; every
    accepted request finishes exactly once: by an output with finish_reason length, stop or
    error (an error message iff "error", which happens only for a planted failure), or by
    abort_request, which returns True exactly for unfinished requests;
 4. num_running + num_waiting is the number of unfinished requests, has_unfinished() says
    whether there is one, and (causal LMs) each KV block's reference count is the number of
    unfinished requests holding it and the free blocks are exactly the others;
 5. output lengths keep to the params: at most max_tokens, exactly max_tokens for "length"
    (mask-predict: one of the requested lengths);
 6. a round drains within a bounded number of steps (nothing stalls);
 7. greedy or seeded requests that finished normally give the same tokens and finish reason
    as the same request alone on a fresh engine (a sample of them, at most SAMPLE per round);
 8. after each round no KV block is leaked (all free, every reference count zero), and a
    greedy request gives the same output as on a fresh engine.
"""
import copy
import random
import time
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import torch

from engine import Engine, MaskPredictParams, SamplingParams
from tests.fault_injection import (
    PlantedFailure, assert_kv_accounting, assert_no_kv_leak, poisoned_forward, run_to_end,
)
from tests.tiny_causal import make_gpt2, make_llama
from tests.tiny_masked import make_masked_lm

BUDGET_S = 5.0  # wall-clock seconds per checkpoint; the round under way when it runs out ends first
SEED = 20260517
OPS_PER_ROUND = 60
SAMPLE = 4  # finished requests per round compared with a fresh engine
MAX_DRAIN_STEPS = 3000
REFUSED = (ValueError, TypeError)

WILD = [  # values of every type a caller might pass, most of them wrong for most fields
    0, 1, 3, -1, -7, 2**31, 2**63, 2**64 + 5, -(2**70), 10**30,
    np.int8(3), np.int64(5), np.uint64(2**64 - 1), np.int32(-2),
    True, False, np.bool_(True),
    0.0, -0.0, 0.5, 1.0, 2.5, 1e-300, 1e-7, 1e39, -1.0, float("nan"), float("inf"), float("-inf"),
    np.float16(0.7), np.float32(0.3), np.float64("nan"), Fraction(1, 3), Decimal("0.5"), 1 + 0j,
    None, "", "3", "the", b"3", [], [1, 2], (3,), [[1]], {"a": 1}, [""], ["the", 5], object(),
    list(range(1, 20_001)), ["the"] * 20_000,  # long lists: validation must stay linear
]


def wild(rng):
    return rng.choice(WILD)


# ---- random params ---------------------------------------------------------------------------

def _sampling_fields(rng):
    return dict(
        temperature=rng.choice([0.0, 0.0, 0.0, 0.7, 1.0, 1e-9, 3e38, np.float32(0.5)]),
        top_k=rng.choice([0, 0, -1, 1, 5, 10**6, 2**63 - 1, np.int64(3)]),
        top_p=rng.choice([1.0, 1.0, 0.9, 0.5, 1e-300, 1e-45]),
        seed=rng.choice([None, None, 0, 7, -1, 2**64 + 5, np.uint64(2**63)]),
        output_kind=rng.choice(["cumulative", "cumulative", "final_only"]),
    )


def causal_fields(rng, vocab, eos):
    fields = _sampling_fields(rng)
    max_tokens = rng.choice([rng.randint(1, 10), rng.randint(1, 20), rng.randint(10, 40)])
    fields.update(
        max_tokens=max_tokens,
        min_tokens=rng.choice([0, 0, rng.randint(0, max_tokens)]),
        stop_token_ids=rng.choice([
            [], [], eos, rng.sample(range(vocab), 3), np.array(rng.sample(range(vocab), 2)),
            list(range(vocab)), [5] * 3000, (vocab - 1,),
        ]),
        stop=rng.choice([[], [], None, "the", ["the", "cat"], ["w5 w6"], ["x" * 500], ("a", "dog")]),
        ignore_eos=rng.choice([False, True, np.bool_(False)]),
        logprobs=rng.choice([None, None, 0, 3, 20]),
    )
    return fields


def masked_fields(rng, vocab, eos):
    fields = _sampling_fields(rng)
    length = rng.randint(1, 12)
    fields.update(
        length=length,
        iterations=rng.choice([rng.randint(1, 8), rng.randint(1, 8), np.int16(3), 40]),  # 40: idle passes
        remask=rng.choice(["low_confidence", "commit", "random"]),
        schedule=rng.choice(["linear", "cosine"]),
        threshold=rng.choice([None, None, 0.5, 1.0, 1e-9]),
        block_length=rng.choice([None, None, rng.randint(1, 6)]),
        length_candidates=rng.choice([None, None, rng.sample(range(1, 10), rng.randint(1, 3))]),
        stop_early=rng.choice([False, True]),
        return_pass_texts=rng.choice([False, True]),
    )
    return fields


# ---- random prompts: (prompt, surely refused) ------------------------------------------------

def random_prompt(rng, vocab, words):
    n = rng.choice([1, 2, rng.randint(1, 12), rng.randint(1, 12), rng.randint(1, 40)])
    ids = [rng.randrange(vocab) for _ in range(n)]
    choice = rng.randrange(20)
    if choice < 10:
        return ids, False
    if choice < 14:
        return " ".join(rng.choice(words) for _ in range(n)), False
    return rng.choice([
        (tuple(ids), False), (range(3, 3 + n), False), (np.array(ids, dtype=np.int32), False),
        (torch.tensor(ids), False), ([np.int64(t) for t in ids], False),
        ("the zebra quux", False), ([rng.randrange(vocab)] * 300, True), (" ".join(["the"] * 300), True),
        (ids + [vocab], True), (ids + [-1], True), (ids + [2**70], True), ([], True), ("", True),
        ("   ", True), ("the \ud800 cat", True), (np.array([], dtype=np.int64), True),
        (np.array(ids, dtype=np.float32), True), (np.array([ids, ids]), True), (ids + [True], True),
        (ids + [1.0], True), (None, True), (42, True), (b"the cat", True), ({"ids": ids}, True),
    ])


# ---- one round -------------------------------------------------------------------------------

class Round:
    """One engine, the operations applied to it and the fuzzer's record of what it was given."""

    def __init__(self, path, kind, seed, planted):
        self.path, self.kind, self.planted = path, kind, planted
        self.rng = rng = random.Random(seed)
        if kind == "causal":
            block_size = rng.choice([1, 2, 4, 16])
            config = dict(block_size=block_size, num_kv_blocks=max(1, rng.choice([24, 32, 40, 64, 128]) // block_size),
                          enable_prefix_caching=rng.choice([True, False]),
                          max_num_batched_tokens=rng.choice([1, 3, 8, 24, 64, 4096]),
                          async_scheduling=rng.choice([True, False]))
        else:  # a pass needs the whole prompt + length + 2 in one batch
            config = dict(max_num_batched_tokens=rng.choice([8, 24, 64, 4096]))
        self.config = dict(config, max_num_seqs=rng.choice([1, 2, 3, 6, 256]), seed=rng.randrange(2**64))
        self.engine = Engine(path, **self.config)
        loaded = self.engine.loaded
        self.vocab, self.eos = loaded.vocab_size, list(loaded.eos_token_ids)
        self.words = list(self.engine.tokenizer.get_vocab())
        self.params_type = SamplingParams if kind == "causal" else MaskPredictParams
        self.fields = causal_fields if kind == "causal" else masked_fields
        self.live = {}  # request id -> (prompt, params as accepted, the caller's params object)
        self.done = []  # (prompt, params as accepted, final output)
        self.log = [f"Engine({path!r}, **{self.config})"]
        self.user_ids = 0

    def run(self):
        rng = self.rng
        operations = [self.add] * 10 + [self.step] * 6 + [self.abort] * 2 + [self.change] * 2
        with ExitStack() as planted:
            if self.planted:
                poison = rng.randrange(self.vocab)
                self.log.append(f"planted: token {poison} fails the forward; some steps raise")
                planted.enter_context(poisoned_forward(self.engine.loaded.model, poison))
                planted.enter_context(sometimes_failing_steps(self.engine.executor, rng))
            for _ in range(OPS_PER_ROUND):
                rng.choice(operations)()
            self.drain()
        self.compare_with_fresh_engines()

    # -- operations --

    def add(self):
        rng = self.rng
        prompt, bad_prompt = random_prompt(rng, self.vocab, self.words)
        params, bad_params = self._params()
        request_id, bad_id = self._request_id()
        arrival_time, bad_time = rng.choice([(None, False)] * 16 + [(time.perf_counter(), False), (1.5, False),
                                                                      ("now", True), (float("nan"), True)])
        accepted = copy.deepcopy(params)
        self.log.append(f"add {_short(prompt)} {_short(params)} id={request_id!r} t={arrival_time!r}")
        before = self._counts()
        try:
            rid = self.engine.add_request(prompt, params, request_id=request_id, arrival_time=arrival_time)
        except REFUSED as error:
            self.log.append(f"  refused: {type(error).__name__}: {str(error)[:120]}")
            assert self._counts() == before, "a refused request changed the engine's counts"
            return
        assert not (bad_prompt or bad_params or bad_id or bad_time), f"accepted a bad request as {rid!r}"
        assert isinstance(rid, str) and rid not in self.live
        assert request_id is None or rid == request_id
        self.live[rid] = (prompt, accepted, params)
        self.log.append(f"  -> {rid}")
        self.check_counts()

    def _params(self):
        """(params, surely refused): built from random fields; a wild field the constructor
        refuses is set after construction instead, so the engine's intake must refuse it."""
        rng = self.rng
        if rng.random() < 0.05:
            params = rng.choice([None, {"temperature": 0.0}, MaskPredictParams(), SamplingParams()])
            return params, params is not None and not isinstance(params, self.params_type)
        fields = self.fields(rng, self.vocab, self.eos)
        for name in rng.sample(sorted(fields), rng.choice([0] * 8 + [1, 2])):
            fields[name] = wild(rng)
        try:
            return self.params_type(**fields), False
        except REFUSED:
            pass
        params = self.params_type(**self.fields(rng, self.vocab, self.eos))
        for name, value in fields.items():
            setattr(params, name, value)
        return params, True

    def _request_id(self):
        """(request_id, surely refused): None, a new one, a live one, a finished one, not a str."""
        rng, choice = self.rng, self.rng.randrange(20)
        if choice == 0 and self.live:
            return rng.choice(sorted(self.live)), True
        if choice == 1 and self.done:
            request_id = rng.choice(self.done)[2].request_id  # free again, unless in use once more
            return request_id, request_id in self.live
        if choice == 2:
            return rng.choice([7, b"x", ("a",)]), True
        if choice == 3:
            self.user_ids += 1
            return f"user-{self.user_ids}", False
        return None, False

    def step(self):
        for _ in range(self.rng.choice([1, 1, 2, 5])):
            self._note_step()
            outputs = self.engine.step()
            ids = [out.request_id for out in outputs]
            assert len(ids) == len(set(ids)), f"two outputs for one request in a step: {ids}"
            for out in outputs:
                self._check_output(out)
            self.check_counts()

    def _note_step(self):
        """Log a step; a run of steps is one line."""
        last = self.log[-1]
        self.log[-1:] = [f"step x{int(last[6:]) + 1}"] if last.startswith("step x") else [last, "step x1"]

    def _check_output(self, out):
        assert out.request_id in self.live, f"an output for {out.request_id!r}, which is not unfinished"
        prompt, params, _ = self.live[out.request_id]
        max_tokens = (params or self.params_type()).max_tokens if self.kind == "causal" else None
        if max_tokens is not None:
            assert len(out.token_ids) <= max_tokens
        if not out.finished:
            assert out.finish_reason is None and out.error is None
            return
        self.log.append(f"  {out.request_id} finished: {out.finish_reason} {out.error or ''}")
        assert out.finish_reason in ("length", "stop", "error"), out.finish_reason
        assert (out.error is not None) == (out.finish_reason == "error"), (out.finish_reason, out.error)
        if out.finish_reason == "error":
            assert self.planted and "PlantedFailure" in out.error, f"a request failed in a step: {out.error}"
        elif out.finish_reason == "length" and max_tokens is not None:
            assert len(out.token_ids) == max_tokens
        elif self.kind == "masked":
            p = params or self.params_type()
            assert len(out.token_ids) in (p.length_candidates or [p.length])
        del self.live[out.request_id]
        self.done.append((prompt, params, out))

    def abort(self):
        rng, choice = self.rng, self.rng.randrange(4)
        if choice < 2 and self.live:
            request_id = rng.choice(sorted(self.live))
        elif choice == 2 and self.done:
            request_id = rng.choice(self.done)[2].request_id
        else:
            request_id = f"unknown-{rng.randrange(100)}"
        self.log.append(f"abort {request_id!r}")
        assert self.engine.abort_request(request_id) == (request_id in self.live)
        self.live.pop(request_id, None)
        self.check_counts()

    def change(self):
        """Change the caller's params object of a live request, which must not matter."""
        caller_params = [params for _, _, params in self.live.values()
                         if isinstance(params, (SamplingParams, MaskPredictParams))]
        if not caller_params:
            return
        params = self.rng.choice(caller_params)
        for name in self.rng.sample(sorted(vars(params)), 2):
            value = getattr(params, name)
            if isinstance(value, list) and self.rng.random() < 0.5:
                value.append(wild(self.rng))
            else:
                setattr(params, name, wild(self.rng))
        self.log.append(f"change the caller's params to {_short(params)}")

    # -- checks --

    def _counts(self):
        stats = self.engine.stats()
        return stats["num_running"], stats["num_waiting"], stats["num_free_kv_blocks"]

    def check_counts(self):
        stats = self.engine.stats()
        assert stats["num_running"] + stats["num_waiting"] == len(self.live), (stats, sorted(self.live))
        assert self.engine.has_unfinished() == bool(self.live)
        assert_kv_accounting(self.engine)

    def drain(self):
        for _ in range(MAX_DRAIN_STEPS):
            if not self.live:
                break
            self.step()
        assert not self.live, f"not finished after {MAX_DRAIN_STEPS} steps: {self.engine.stats()}"
        assert_no_kv_leak(self.engine)

    def compare_with_fresh_engines(self):
        """A sample of the greedy or seeded requests that finished normally, each alone on a
        fresh engine (default options), then a greedy request here and on a fresh engine."""
        normal = [(prompt, params, out) for prompt, params, out in self.done
                  if out.finish_reason in ("length", "stop") and _reproducible(params)]
        for prompt, params, out in self.rng.sample(normal, min(SAMPLE, len(normal))):
            self.log.append(f"compare {out.request_id} with a fresh engine")
            fresh = Engine(self.path, num_kv_blocks=64) if self.kind == "causal" else Engine(self.path)
            want = _alone(fresh, prompt, params)
            assert (out.token_ids, out.finish_reason) == (want.token_ids, want.finish_reason), (
                f"request {out.request_id} ({_short(prompt)}, {params}) gave {out.token_ids} "
                f"({out.finish_reason}); alone on a fresh engine {want.token_ids} ({want.finish_reason})")
        self.log.append("a greedy request here and on a fresh engine")
        greedy = SamplingParams(temperature=0.0, max_tokens=4) if self.kind == "causal" else \
            MaskPredictParams(length=4, iterations=2)
        got = _alone(self.engine, [5], greedy)
        assert got.finish_reason != "error"
        assert got.token_ids == _alone(Engine(self.path, **self.config), [5], greedy).token_ids
        assert_no_kv_leak(self.engine)


@contextmanager
def sometimes_failing_steps(executor, rng, rate=0.03):
    """Within the block, the executor's whole step raises now and then: an error nobody can
    be blamed for, which the Engine answers by failing every request in flight."""
    step = executor.step

    def sometimes_failing():
        if rng.random() < rate:
            raise PlantedFailure("planted: the whole step failed")
        return step()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(executor, "step", sometimes_failing)
        yield


def _alone(engine, prompt, params):
    rid = engine.add_request(prompt, params)
    return run_to_end(engine, MAX_DRAIN_STEPS)[rid]


def _reproducible(params):
    """Seeded, or greedy without random re-masking: the tokens depend neither on the engine's
    seed nor on the batch."""
    if not isinstance(params, (SamplingParams, MaskPredictParams)):
        return False
    draws = params.temperature > 0 or getattr(params, "remask", None) == "random"
    return params.seed is not None or not draws


def _short(value, width=90):
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    return {"gpt2": (make_gpt2(root), "causal"), "llama": (make_llama(root), "causal"),
            "bert": (make_masked_lm("bert", str(root / "bert")), "masked")}


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_fuzz(checkpoints, name):
    path, kind = checkpoints[name]
    deadline = time.perf_counter() + BUDGET_S
    rounds = finished = 0
    while rounds == 0 or time.perf_counter() < deadline:
        seed = f"{SEED}-{name}-{rounds}"
        fuzz = Round(path, kind, seed, planted=rounds % 3 == 2)
        try:
            fuzz.run()
        except Exception as error:
            raise AssertionError(f"round {seed!r} broke an invariant ({type(error).__name__}: {error}); "
                                 "its last operations:\n  " + "\n  ".join(fuzz.log[-30:])) from error
        rounds += 1
        finished += sum(out.finish_reason in ("length", "stop") for _, _, out in fuzz.done)
    assert finished >= rounds  # the fuzz reaches the model, not only the checks
