"""The pure math of mask-predict's schedule: how many slots stay masked, blocks, seed streams.

Masking schedule. After pass t (0-based) of a block's T passes, n(t) of its N slots stay
masked:
    linear   n(t) = floor(N * (T - 1 - t) / T)          (Mask-Predict)
    cosine   n(t) = floor(N * cos(pi/2 * (t + 1) / T))   (MaskGIT)
and n(T-1) = 0 for both, so a block is complete after its T passes. n never grows with t,
so it is also given by its drops (`masked_drops`): the first pass after which at most k slots
stay masked, for each k; that takes N numbers per block however many passes it has.

Blocks. With block_length b the N target slots form ceil(N / b) blocks of b slots (the last
may be shorter), decoded left to right; the T iterations are split evenly, T // B passes per
block and one more for each of the first T % B blocks.

Seed streams. A sampled slot draws with seed mix_seed(seed, SAMPLE_STREAM, pass, slot);
remask="random" ranks slots by mix_seed(seed, REMASK_STREAM, pass, slot) (engine/seeding.py;
pass counts all passes of the sequence from 0, slot indexes the N target slots from 0).
"""
import math
from dataclasses import dataclass
from functools import lru_cache

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


def num_blocks(num_slots: int, block_length: int | None) -> int:
    return 1 if block_length is None else -(-num_slots // block_length)


def split_blocks(num_slots: int, block_length: int | None, iterations: int) -> list[Block]:
    """The semi-autoregressive blocks, left to right, with their share of the iterations."""
    count = num_blocks(num_slots, block_length)
    size = num_slots if block_length is None else block_length
    base, extra = divmod(iterations, count)
    return [
        Block(i * size, min((i + 1) * size, num_slots), base + (1 if i < extra else 0))
        for i in range(count)
    ]


@lru_cache(maxsize=1024)
def masked_drops(num_slots: int, passes: int, schedule: str) -> tuple[int, ...]:
    """n(t) of a block as its drops: drops[k] (k < num_slots) is the first pass t after which
    at most k slots stay masked, so n(t) = #{k : drops[k] > t} (n never grows). Found by
    bisection over masked_after: O(num_slots log passes), whatever the number of passes."""
    drops = []
    for k in range(num_slots):
        low, high = 0, passes - 1  # n(passes - 1) = 0 <= k
        while low < high:
            middle = (low + high) // 2
            if masked_after(num_slots, middle, passes, schedule) <= k:
                high = middle
            else:
                low = middle + 1
        drops.append(low)
    return tuple(drops)
