"""The batched slot rules on hand-made passes and against plain Python sorting (the rules
inside whole requests are checked against the HF oracle in test_mask_predict.py)."""
import random

import pytest
import torch

from engine.mask_rules import REMASK_RULES, PassView, smallest


@pytest.mark.parametrize("seed", range(5))
def test_smallest_takes_the_lowest_keys_and_the_lower_position_on_ties(seed):
    rng = random.Random(seed)
    rows, width = 40, 12
    keys = [[rng.choice([0.25, 0.5, 0.75, rng.random()]) for _ in range(width)] for _ in range(rows)]
    eligible = [[rng.random() < 0.7 for _ in range(width)] for _ in range(rows)]
    count = [rng.randint(-1, width + 1) for _ in range(rows)]
    got = smallest(torch.tensor(keys), torch.tensor(eligible), torch.tensor(count))
    for r in range(rows):
        ranked = sorted((j for j in range(width) if eligible[r][j]), key=lambda j: (keys[r][j], j))
        assert set(torch.nonzero(got[r])[:, 0].tolist()) == set(ranked[: max(count[r], 0)]), r


def test_smallest_on_int64_keys_near_the_limits():
    keys = torch.tensor([[2**63 - 1, 0, 2**63 - 1, 5]])
    chosen = smallest(keys, torch.tensor([[True, False, True, True]]), torch.tensor([2]))
    assert chosen.tolist() == [[True, False, False, True]]


def view(predicted, confidence, in_block, keep_masked):
    n = len(predicted)
    return PassView(torch.tensor(predicted), torch.tensor(confidence), torch.tensor(in_block),
                    torch.tensor(keep_masked), torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64))


def test_each_rule_on_one_pass():
    # slots 0-3 are the block; 0 and 2 were masked and are predicted; 4 is the next block
    v = view([[True, False, True, False, False]], [[0.2, 0.9, 0.2, 0.1, 0.0]],
             [[True, True, True, True, False]], [1])
    fill, remask = REMASK_RULES["low_confidence"](v)
    assert fill.tolist() == [[True, False, True, False, False]]
    assert remask.tolist() == [[False, False, False, True, False]]  # 0.1 is the lowest in the block
    fill, remask = REMASK_RULES["commit"](v)
    assert fill.tolist() == [[True, False, False, False, False]]  # 2 predicted - 1 left masked; tie: slot 0
    assert not remask.any()
    fill, remask = REMASK_RULES["random"](v)
    assert fill.tolist() == [[True, False, True, False, False]] and remask.sum() == 1 and not remask[0, 4]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_drops_give_the_schedule_back(schedule):
    from engine.mask_schedule import masked_after, masked_drops

    for slots in (1, 2, 5, 9):
        for passes in (1, 2, 3, 7, 9, 20, 64):
            drops = masked_drops(slots, passes, schedule)
            for t in range(passes):
                assert sum(d > t for d in drops) == masked_after(slots, t, passes, schedule), (slots, passes, t)
    huge = 2**31 - 1  # as many passes as params allow: bisection, no table of passes
    drops = masked_drops(7, huge, schedule)
    for t in (0, 1, huge // 3, huge // 2, huge - 2, huge - 1):
        assert sum(d > t for d in drops) == masked_after(7, t, huge, schedule)
