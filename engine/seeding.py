"""Counter-based seeds: one well-mixed int64 from a request seed and any counters.

mix_seed(seed, *keys) chains splitmix64 over the seed and the keys (each taken mod 2^64)
and keeps the top 63 bits, a non-negative int64:
    h = splitmix64(seed);  for k in keys: h = splitmix64(h XOR k);  return h >> 1
splitmix64(x): x += 0x9E3779B97F4A7C15; x = (x ^ x>>30) * 0xBF58476D1CE4E5B9;
               x = (x ^ x>>27) * 0x94D049BB133111EB; return x ^ x>>31   (all mod 2^64).
A draw seeded this way depends only on the request's seed and its own counters (generated
tokens, pass, slot), never on what else shares the batch.

The math is written once (`_mix`) over two kinds of 64-bit words: numpy uint64 arrays
(`mix_seeds`, a batch on the host; `mix_seed` is its one-value form) and torch int64 tensors
(`mix_seeds_torch`, a batch on the engine's device: int64 arithmetic wraps like uint64, and
right shifts clear the sign bits they bring in).
"""
import numpy as np
import torch

MASK64 = (1 << 64) - 1
_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _mix(word, shift, seed, keys):
    """mix_seed over words: word(c) makes a constant a word; shift(x, k) is x >> k unsigned."""
    def splitmix64(x):
        x = x + word(_GOLDEN)
        x = (x ^ shift(x, 30)) * word(_MIX1)
        x = (x ^ shift(x, 27)) * word(_MIX2)
        return x ^ shift(x, 31)

    h = splitmix64(seed)
    for key in keys:
        h = splitmix64(h ^ key)
    return shift(h, 1)


def mix_seed(seed: int, *keys: int) -> int:
    return int(mix_seeds(seed & MASK64, *(key & MASK64 for key in keys)))


def mix_seeds(seeds, *keys):
    """mix_seed over numpy arrays (uint64 arithmetic wraps mod 2^64): int64 [B] from seeds [B]
    and keys, each an int or an array [B]; equal to [mix_seed(s, *k) for each row]."""
    with np.errstate(over="ignore"):
        h = _mix(np.uint64, lambda x, k: x >> np.uint64(k), np.asarray(seeds).astype(np.uint64),
                 [np.asarray(key).astype(np.uint64) for key in keys])
    return h.astype(np.int64)


def _signed(c: int) -> int:
    """The int64 with the bits of the uint64 c."""
    return c - (1 << 64) if c >> 63 else c


def mix_seeds_torch(seeds: torch.Tensor, *keys) -> torch.Tensor:
    """mix_seed over int64 tensors on any device: seeds (the uint64 seed's bits, e.g. from
    `as_int64`) and keys (ints or int64 tensors) broadcast together; non-negative int64."""
    def shift(x, k):
        return (x >> k) & ((1 << (64 - k)) - 1)

    return _mix(_signed, shift, seeds, [_signed(k & MASK64) if isinstance(k, int) else k for k in keys])


def as_int64(seed: int) -> int:
    """A seed in [0, 2^64) as the int64 with the same bits (what `mix_seeds_torch` takes)."""
    return _signed(seed & MASK64)
