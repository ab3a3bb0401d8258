"""Counter-based seeds: one well-mixed int64 from a request seed and any counters.

mix_seed(seed, *keys) chains splitmix64 over the seed and the keys (each taken mod 2^64)
and keeps the top 63 bits, a non-negative int64:
    h = splitmix64(seed);  for k in keys: h = splitmix64(h XOR k);  return h >> 1
splitmix64(x): x += 0x9E3779B97F4A7C15; x = (x ^ x>>30) * 0xBF58476D1CE4E5B9;
               x = (x ^ x>>27) * 0x94D049BB133111EB; return x ^ x>>31   (all mod 2^64).
A draw seeded this way depends only on the request's seed and its own counters (generated
tokens, pass, slot), never on what else shares the batch.
"""
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(seed: int, *keys: int) -> int:
    h = _splitmix64(seed & _MASK64)
    for key in keys:
        h = _splitmix64(h ^ (key & _MASK64))
    return h >> 1
