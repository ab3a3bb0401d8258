"""The seed mixer's three forms (Python int, numpy, torch) against splitmix64 written out here."""
import random

import numpy as np
import pytest
import torch

from engine.seeding import MASK64, as_int64, mix_seed, mix_seeds, mix_seeds_torch


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) % 2**64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
    return x ^ (x >> 31)


def expected(seed, *keys):
    h = splitmix64(seed % 2**64)
    for key in keys:
        h = splitmix64(h ^ (key % 2**64))
    return h >> 1


rng = random.Random(0)
SEEDS = [0, 1, 2**63 - 1, 2**63, 2**64 - 1] + [rng.getrandbits(64) for _ in range(60)]


@pytest.mark.parametrize("keys", [(), (0,), (1, 7, 3), (2**63 + 5, 2**64 - 1), (-1,)])
def test_mix_seed_is_splitmix64_chained(keys):
    assert [mix_seed(s, *keys) for s in SEEDS] == [expected(s, *keys) for s in SEEDS]
    assert mix_seed(2**70 + 3, *keys) == expected(3, *keys)  # seeds are taken mod 2^64


def test_numpy_and_torch_batches_agree_with_mix_seed():
    counters = np.arange(len(SEEDS), dtype=np.int64) * 1_000_003
    want = [mix_seed(s, 1, int(c), i) for i, (s, c) in enumerate(zip(SEEDS, counters))]
    slots = np.arange(len(SEEDS))
    assert mix_seeds(np.array([s & MASK64 for s in SEEDS], dtype=np.uint64), 1, counters, slots).tolist() == want
    seeds = torch.tensor([as_int64(s) for s in SEEDS])
    got = mix_seeds_torch(seeds, 1, torch.from_numpy(counters), torch.from_numpy(slots))
    assert got.dtype == torch.int64 and got.tolist() == want
    assert (got >= 0).all()


def test_torch_broadcasts_seeds_over_slots():
    seeds = torch.tensor([as_int64(s) for s in SEEDS[:4]])
    keys = mix_seeds_torch(seeds[:, None], 1, torch.tensor([[2], [3], [4], [5]]), torch.arange(6)[None, :])
    assert keys.tolist() == [[mix_seed(s, 1, p, j) for j in range(6)] for s, p in zip(SEEDS[:4], (2, 3, 4, 5))]
