"""BlockManager: reference counts, free list, prefix caching with LRU eviction."""
import pytest

from engine.kv_cache import BlockManager, bytes_per_block
from engine.params import SamplingParams
from engine.request import Request


def make_request(tokens, rid="r"):
    return Request(rid, None, tokens, SamplingParams(max_tokens=4), seed=0, arrival_time=0.0)


def admit(bm, req, num_tokens=None):
    """Allocate like the scheduler: prefix hits, then fresh blocks up to num_tokens."""
    hits = bm.match_prefix(req)
    num_tokens = req.num_tokens if num_tokens is None else num_tokens
    assert bm.can_allocate(hits, num_tokens)
    bm.allocate(req, hits, num_tokens)
    req.num_computed_tokens = len(hits) * bm.block_size
    return hits


def compute_all(bm, req):
    req.num_computed_tokens = req.num_tokens
    bm.seal_computed(req)


def test_allocate_and_free_counts():
    bm = BlockManager(num_blocks=8, block_size=4)
    req = make_request(list(range(10)))
    admit(bm, req)
    assert len(req.block_table) == 3 and bm.num_free_blocks == 5
    assert all(bm.ref_counts[b] == 1 for b in req.block_table)
    bm.free(req)
    assert bm.num_free_blocks == 8 and req.block_table == []
    assert all(c == 0 for c in bm.ref_counts)


def test_append_slots_grows_at_block_boundaries():
    bm = BlockManager(num_blocks=4, block_size=4)
    req = make_request([1, 2, 3, 4])
    admit(bm, req)
    assert len(req.block_table) == 1
    bm.append_slots(req, 4)
    assert len(req.block_table) == 1
    bm.append_slots(req, 5)
    assert len(req.block_table) == 2
    assert bm.can_append(req, 16) and not bm.can_append(req, 17)


def test_prefix_hit_shares_blocks_and_keeps_last_token():
    bm = BlockManager(num_blocks=16, block_size=4)
    first = make_request(list(range(12)), "a")
    admit(bm, first)
    compute_all(bm, first)
    # Same 12 tokens: only the first two blocks may hit, the last token must be computed.
    second = make_request(list(range(12)), "b")
    hits = admit(bm, second)
    assert hits == first.block_table[:2]
    assert second.num_computed_tokens == 8
    assert bm.ref_counts[hits[0]] == 2
    # A diverging second block: only the first block hits.
    third = make_request(list(range(4)) + [99] * 8, "c")
    assert admit(bm, third) == first.block_table[:1]


def test_prefix_caching_disabled_never_hits():
    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=False)
    first = make_request(list(range(12)), "a")
    admit(bm, first)
    compute_all(bm, first)
    assert bm.match_prefix(make_request(list(range(12)), "b")) == []


def test_hash_chains_through_parent():
    """Equal block content after a different prefix is a different block."""
    bm = BlockManager(num_blocks=16, block_size=4)
    a = make_request([1, 1, 1, 1, 5, 6, 7, 8, 0], "a")
    admit(bm, a)
    compute_all(bm, a)
    b = make_request([2, 2, 2, 2, 5, 6, 7, 8, 0], "b")
    assert bm.match_prefix(b) == []


def test_freed_cached_blocks_stay_reusable_until_evicted_lru():
    bm = BlockManager(num_blocks=4, block_size=2)
    a = make_request([1, 2, 3, 4, 9], "a")
    admit(bm, a)
    compute_all(bm, a)
    blocks_a = list(a.block_table)
    bm.free(a)
    assert bm.num_free_blocks == 4  # cached but evictable blocks count as free
    # Reuse after release:
    a2 = make_request([1, 2, 3, 4, 7], "a2")
    assert admit(bm, a2) == blocks_a[:2]
    bm.free(a2)
    # Fill the cache with other tokens: the free list goes first, then the LRU cached block.
    other = make_request([50, 51, 52, 53, 54, 55], "o")
    admit(bm, other)
    assert bm.num_free_blocks == 1
    # The tail block was released first, so it was evicted first; the prefix block survives.
    assert bm.match_prefix(make_request([1, 2, 3, 4, 8], "z")) == blocks_a[:1]


def test_evictable_hits_count_against_free_blocks():
    bm = BlockManager(num_blocks=3, block_size=2)
    a = make_request([1, 2, 3, 4, 5], "a")
    admit(bm, a)
    compute_all(bm, a)
    bm.free(a)
    b = make_request([1, 2, 3, 4, 5, 6, 7, 8], "b")
    hits = bm.match_prefix(b)
    assert len(hits) == 2
    assert bm.can_allocate(hits, 6) and not bm.can_allocate(hits, 8)


def test_duplicate_content_keeps_first_cached_block():
    bm = BlockManager(num_blocks=8, block_size=2)
    a, b = make_request([1, 2, 3], "a"), make_request([1, 2, 3], "b")
    admit(bm, a)
    admit(bm, b)  # admitted before a computed anything: no hit
    compute_all(bm, a)
    compute_all(bm, b)
    first_block_of_a = a.block_table[0]
    bm.free(a)
    bm.free(b)
    assert bm.num_free_blocks == 8
    assert bm.match_prefix(make_request([1, 2, 9], "c")) == [first_block_of_a]
    assert len(bm.cached) == 1


def test_bytes_per_block():
    import torch
    assert bytes_per_block(2, 16, 4, 8, torch.float16) == 2 * 2 * 16 * 4 * 8 * 2


def test_out_of_blocks_raises():
    bm = BlockManager(num_blocks=1, block_size=2)
    req = make_request([1, 2, 3])
    with pytest.raises(RuntimeError, match="out of blocks"):
        bm.allocate(req, [], 3)
