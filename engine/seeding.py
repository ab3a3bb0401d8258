"""Counter-based seeds: one well-mixed int64 from a request seed and any counters.

mix_seed(seed, *keys) chains splitmix64 over the seed and the keys (each taken mod 2^64)
and keeps the top 63 bits, a non-negative int64:
    h = splitmix64(seed);  for k in keys: h = splitmix64(h XOR k);  return h >> 1
splitmix64(x): x += 0x9E3779B97F4A7C15; x = (x ^ x>>30) * 0xBF58476D1CE4E5B9;
               x = (x ^ x>>27) * 0x94D049BB133111EB; return x ^ x>>31   (all mod 2^64).
A draw seeded this way depends only on the request's seed and its own counters (generated
tokens, pass, slot), never on what else shares the batch. `mix_seeds` computes the same
over numpy arrays, for a whole batch at once.
"""
import numpy as np

MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def mix_seed(seed: int, *keys: int) -> int:
    h = _splitmix64(seed & MASK64)
    for key in keys:
        h = _splitmix64(h ^ (key & MASK64))
    return h >> 1


def mix_seeds(seeds, *keys):
    """mix_seed over numpy arrays (uint64 arithmetic wraps mod 2^64): int64 [B] from seeds [B]
    and keys, each an int or an array [B]; equal to [mix_seed(s, *k) for each row]."""
    with np.errstate(over="ignore"):
        h = _splitmix64_array(np.asarray(seeds).astype(np.uint64))
        for key in keys:
            h = _splitmix64_array(h ^ np.asarray(key).astype(np.uint64))
    return (h >> np.uint64(1)).astype(np.int64)


def _splitmix64_array(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
