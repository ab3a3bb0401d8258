"""The pieces speculative decoding adds to the AR machinery: lookahead slots in the scheduler,
the block manager's rollback, several sample rows per sequence, the adaptive proposer."""
import numpy as np
import pytest

from engine import Engine, SamplingParams
from engine.kv_cache import BlockManager
from engine.runner import _sample_rows
from engine.scheduler import Scheduler
from engine.speculative.config import SpeculativeConfig
from engine.speculative.masked_drafter import split_slots
from engine.speculative.proposer import Proposer, step_features
from tests.test_scheduler import make_request
from tests.tiny_speculative import make_causal, make_truncated


def test_lookahead_stays_within_max_tokens_and_budget():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=9)
    a, b = make_request("a", 5, max_tokens=3), make_request("b", 2, max_tokens=10)
    sched.add(a)
    sched.add(b)
    batch = sched.schedule(lookahead=4)
    # a: 5 prompt tokens, at most max_tokens - 1 = 2 drafts; b: what the budget leaves
    assert batch.num_new_tokens == [5, 2] and batch.lookahead == [2, 0]
    assert [len(r.block_table) for r in (a, b)] == [2, 1]  # 5 + 2 slots need two blocks of 4


def test_drafts_give_way_before_anyone_is_preempted():
    bm = BlockManager(4, 4)
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=64)
    a, b = make_request("a", 7, max_tokens=8), make_request("b", 7, max_tokens=8)
    sched.add(a)
    sched.add(b)
    sched.update(sched.schedule())
    for req in (a, b):
        req.append_token(1, None, 0.0)  # 8 tokens each: their 2 blocks, the whole cache
    batch = sched.schedule(lookahead=3)
    assert batch.num_new_tokens == [1, 1] and batch.lookahead == [0, 0] and sched.num_preemptions == 0


def test_rollback_frees_only_the_tail_of_rejected_drafts():
    bm = BlockManager(8, 4)
    req = make_request("r", 6, max_tokens=8)
    bm.allocate(req, [], 6 + 5)  # 6 known tokens + 5 draft slots: 3 blocks
    req.num_computed_tokens = 5
    bm.seal_computed(req)  # the first block is full of computed tokens: sealed
    sealed = req.block_table[0]
    bm.rollback(req, 7)  # 7 tokens known after the step: 2 blocks
    assert req.block_table[0] == sealed and len(req.block_table) == 2
    assert bm.num_free_blocks == 6 and bm.block_hash[sealed] is not None


def test_sample_rows_cover_drafts_plus_one_per_sampling_sequence():
    last_rows = np.array([3, 4, 8, 11])  # sequences packed as rows 0-3, 4, 5-8, 9-11
    samples = np.array([True, False, True, True])
    assert _sample_rows(last_rows, samples, None).tolist() == [3, 8, 11]
    assert _sample_rows(last_rows, samples, np.array([2, 0, 0, 1])).tolist() == [1, 2, 3, 8, 10, 11]


def test_masked_draft_blocks_are_left_to_right_and_cover_every_slot():
    assert split_slots(5, 2) == [range(0, 3), range(3, 5)]
    assert split_slots(2, 4) == [range(0, 1), range(1, 2)]
    assert split_slots(8, 1) == [range(0, 8)]


class _PlannedDrafter:
    @staticmethod
    def cost_plan(requests):
        return lambda k: (k, len(requests) * (k + 1))


def _trained_proposer(verify_per_token, accept_rate):
    """A proposer fed with steps whose verify time is 1 ms + verify_per_token per token,
    whose drafts cost 0.1 ms a forward, and whose drafts are accepted at accept_rate."""
    spec = SpeculativeConfig(model="draft", num_speculative_tokens=4, adaptive=True)
    proposer = Proposer(spec, _PlannedDrafter())
    rng = np.random.default_rng(0)
    for step in range(200):
        batch, k = int(rng.integers(1, 64)), int(rng.integers(0, 5))
        tokens = batch * (k + 1)
        outcomes = []
        for _ in range(batch):
            accepted = 0
            while accepted < k and rng.random() < accept_rate:
                accepted += 1
            outcomes.append((k, accepted))
        draft = (k, tokens) if k else (0, 0)
        seconds = 1e-3 + verify_per_token * tokens + 1e-4 * k
        proposer.observe(step_features(tokens, *draft), seconds, outcomes)
    return proposer


def test_adaptive_proposer_drafts_where_it_pays():
    fixed_cost = _trained_proposer(verify_per_token=1e-7, accept_rate=0.8)
    assert fixed_cost.best([None] * 4) == 4  # rows nearly free, drafts accepted: draft the most
    per_token_cost = _trained_proposer(verify_per_token=1e-4, accept_rate=0.8)
    assert per_token_cost.best([None] * 256) == 0  # each row costs as much as a step: do not draft
    useless = _trained_proposer(verify_per_token=1e-7, accept_rate=0.0)
    assert useless.best([None] * 4) == 0


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec-sched")
    target = make_causal(root, "target")
    return target, make_truncated(target, root, "draft")


def test_requests_hold_only_the_blocks_their_accepted_tokens_need(pair):
    target, draft = pair
    engine = Engine(target, block_size=4, num_kv_blocks=64,
                    speculative_config={"model": draft, "num_speculative_tokens": 6})
    for prompt in ([5, 6, 7], [9, 10, 11, 12, 13]):
        engine.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True))
    bm = engine.executor.block_manager
    while engine.has_unfinished():
        engine.step()
        for req in engine.executor.scheduler.running:
            assert len(req.block_table) == bm.blocks_for(req.num_tokens)
            assert req.num_computed_tokens == req.num_tokens - 1
