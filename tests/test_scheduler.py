"""Scheduler: chunked prefill, mixed batches, FCFS, preemption by recompute, abort.

A model-free simulation: a request whose tokens are all computed "samples" a token that is
a function of its token count, and finishes at max_tokens.
"""
import random

from engine.kv_cache import BlockManager
from engine.params import SamplingParams
from engine.request import Request, RequestStatus
from engine.scheduler import Scheduler


def make_request(rid, prompt_len, max_tokens=4):
    tokens = [(7 * i + len(rid)) % 50 for i in range(prompt_len)]
    return Request(rid, None, tokens, SamplingParams(max_tokens=max_tokens), seed=0, arrival_time=0.0)


def fake_step(sched):
    """One step: schedule, 'compute', append a token to every fully computed request."""
    batch = sched.schedule()
    sched.update(batch)
    for req in batch.sampling:
        req.append_token(req.num_tokens % 50, None, 0.0)
        if req.num_generated == req.params.max_tokens:
            sched.remove(req)
            req.finish("length", 0.0)
    return batch


def test_chunked_prefill_respects_token_budget():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=5)
    req = make_request("long", 12, max_tokens=2)
    sched.add(req)
    chunks = [fake_step(sched).num_new_tokens for _ in range(3)]
    assert chunks == [[5], [5], [2]]
    assert req.num_generated == 1  # only the last chunk samples


def test_decode_and_prefill_mixed_in_one_step():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=8)
    a = make_request("a", 3)
    sched.add(a)
    fake_step(sched)
    b = make_request("b", 20)
    sched.add(b)
    batch = fake_step(sched)
    assert batch.requests == [a, b] and batch.num_new_tokens == [1, 7]


def test_max_num_seqs_limits_admission():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=2, max_num_batched_tokens=100)
    for i in range(3):
        sched.add(make_request(f"r{i}", 3))
    batch = fake_step(sched)
    assert [r.request_id for r in batch.requests] == ["r0", "r1"]


def test_preempts_most_recent_and_resumes_by_recompute():
    bm = BlockManager(num_blocks=4, block_size=2)
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=100)
    a, b = make_request("a", 4, max_tokens=4), make_request("b", 4, max_tokens=4)
    sched.add(a)
    sched.add(b)
    fake_step(sched)  # both prefilled: 2 blocks each, cache full
    assert bm.num_free_blocks == 0
    batch = fake_step(sched)  # a's fifth token needs a third block: b (admitted last) is preempted
    assert batch.requests == [a] and sched.num_preemptions == 1
    assert b.status is RequestStatus.PREEMPTED and b.block_table == [] and b.num_computed_tokens == 0
    assert sched.waiting[0] is b
    while sched.has_unfinished():
        fake_step(sched)
    assert a.num_generated == b.num_generated == 4
    assert bm.num_free_blocks == 4


def test_abort_frees_everything_at_once():
    bm = BlockManager(num_blocks=16, block_size=2)
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=100)
    a, b = make_request("a", 5), make_request("b", 5)
    sched.add(a)
    sched.add(b)
    fake_step(sched)
    sched.remove(a)
    assert a.block_table == [] and a.row is None
    assert sched.running == [b]
    sched.remove(b)
    assert not sched.has_unfinished() and bm.num_free_blocks == 16


def test_prefix_hits_skip_computed_blocks():
    bm = BlockManager(num_blocks=32, block_size=4)
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=100)
    a = make_request("a", 10, max_tokens=1)
    sched.add(a)
    fake_step(sched)
    b = Request("b", None, a.prompt_token_ids, SamplingParams(max_tokens=1), seed=0, arrival_time=0.0)
    sched.add(b)
    batch = fake_step(sched)
    assert batch.num_new_tokens == [2] and b.metrics.cached_prompt_tokens == 8


def test_random_workload_completes_fcfs_and_frees_all_blocks():
    rng = random.Random(0)
    bm = BlockManager(num_blocks=24, block_size=4)
    sched = Scheduler(bm, max_num_seqs=6, max_num_batched_tokens=16)
    reqs = [make_request(f"r{i}", rng.randint(1, 40), rng.randint(1, 30)) for i in range(60)]
    for r in reqs:
        sched.add(r)
    steps = 0
    while sched.has_unfinished():
        batch = fake_step(sched)
        assert sum(batch.num_new_tokens) <= 16 and len(batch) <= 6
        assert len(batch) > 0, "a step with unfinished requests must make progress"
        steps += 1
    assert all(r.is_finished and r.num_generated == r.params.max_tokens for r in reqs)
    assert sched.num_preemptions > 0
    assert bm.num_free_blocks == 24 and all(c == 0 for c in bm.ref_counts)
