"""The attention layers the models hold: they own the per-layer state (heads, scale, the
layer's slice of the paged KV cache) and call the engine's attention backend."""
from torch import nn


class PagedAttention(nn.Module):
    """Causal attention of a step's tokens: stores their k/v into this layer's paged cache,
    then attends over it as `meta.mode` says (engine.attention.metadata).

    The runner binds `k_cache`/`v_cache` ([num_blocks, block_size, Hkv, D]) after it has
    sized the cache; without a bound cache only the "prefill" mode can run.
    """

    def __init__(self, backend, num_heads, num_kv_heads, head_dim, scale):
        super().__init__()
        self.backend = backend
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = scale
        self.k_cache = self.v_cache = None

    def forward(self, q, k, v, meta, rope=None):
        """q [T, Hq, D], k/v [T, Hkv, D] -> [T, Hq, D]; with a `Rope`, q and k are rotated
        (and the projection's bias added) before k/v are stored."""
        return self.backend.paged(q, k, v, self.k_cache, self.v_cache, self.scale, meta, rope)


class EncoderAttention(nn.Module):
    """Bidirectional attention within each packed sequence of an encoder pass (no cache)."""

    def __init__(self, backend, num_heads, head_dim, scale):
        super().__init__()
        self.backend = backend
        self.num_heads, self.head_dim, self.scale = num_heads, head_dim, scale

    def forward(self, q, k, v, meta, rope=None):
        """q/k/v [T, H, D] -> [T, H, D]; with a `Rope`, q and k are rotated (and the
        projection's bias added) first."""
        return self.backend.encoder(q, k, v, self.scale, meta, rope)
