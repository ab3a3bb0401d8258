"""The pure math of mask-predict: how many slots stay masked, blocks, seeds, slot choice.

Masking schedule. After pass t (0-based) of a block's T passes, n(t) of its N slots stay
masked:
    linear   n(t) = floor(N * (T - 1 - t) / T)          (Mask-Predict)
    cosine   n(t) = floor(N * cos(pi/2 * (t + 1) / T))   (MaskGIT)
and n(T-1) = 0 for both, so a block is complete after its T passes.

Blocks. With block_size b the N target slots form ceil(N / b) blocks of b slots (the last
may be shorter), decoded left to right; the T passes are split evenly, T // B per block and
one more for each of the first T % B blocks.

Seeds (engine/seeding.py defines mix_seed, splitmix64 chained over the seed and keys).
A sampled slot draws with seed mix_seed(seed, SAMPLE_STREAM, pass, slot); remask="random"
re-masks the n slots with the smallest mix_seed(seed, REMASK_STREAM, pass, slot) (pass
counts all passes of the sequence from 0, slot indexes the N target slots from 0).

Slot choice. Lowest confidence first for re-masking, highest first for filling; equal
confidences go to the lower position first in both.
"""
import math
from dataclasses import dataclass

from engine.seeding import mix_seed

SCHEDULE_NAMES = ("linear", "cosine")
SAMPLE_STREAM, REMASK_STREAM = 0, 1


def masked_after(num_slots: int, t: int, passes: int, schedule: str) -> int:
    """n(t): slots of a block of num_slots that stay masked after pass t of `passes`."""
    if t >= passes - 1:
        return 0
    if schedule == "linear":
        return num_slots * (passes - 1 - t) // passes
    if schedule == "cosine":
        return math.floor(num_slots * math.cos(math.pi / 2 * (t + 1) / passes))
    raise ValueError(f"schedule must be one of {SCHEDULE_NAMES}, got {schedule!r}")


@dataclass(frozen=True)
class Block:
    start: int  # first target slot
    end: int  # one past the last
    passes: int  # passes given to it (unused under a confidence threshold)


def num_blocks(num_slots: int, block_size: int | None) -> int:
    return 1 if block_size is None else -(-num_slots // block_size)


def split_blocks(num_slots: int, block_size: int | None, passes: int) -> list[Block]:
    """The semi-autoregressive blocks, left to right, with their share of the passes."""
    count = num_blocks(num_slots, block_size)
    size = num_slots if block_size is None else block_size
    base, extra = divmod(passes, count)
    return [
        Block(i * size, min((i + 1) * size, num_slots), base + (1 if i < extra else 0))
        for i in range(count)
    ]


def lowest_confidence(slots, confidence, n: int) -> list[int]:
    """The n slots of lowest confidence (ties: lower position first)."""
    return sorted(slots, key=lambda s: (confidence[s], s))[:n]


def most_confident(slots, confidence, n: int) -> list[int]:
    """The n slots of highest confidence (ties: lower position first)."""
    return sorted(slots, key=lambda s: (-confidence[s], s))[:n]


def random_slots(slots, seed: int, pass_index: int, n: int) -> list[int]:
    """n slots drawn without replacement: the smallest hash keys of (seed, pass, slot)."""
    return sorted(slots, key=lambda s: (mix_seed(seed, REMASK_STREAM, pass_index, s), s))[:n]
