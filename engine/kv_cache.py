"""Paged KV cache: a block allocator with reference counts and prefix caching, and the tensors.

Every admitted request holds a row of `block_tables`, an int32 array [rows, max_blocks] that
mirrors its `block_table` list, so a step reads the tables of its batch with one fancy index
instead of rebuilding them from lists.

Prefix caching: once every token of a full block has been computed, the block is sealed
under the hash of its content chained to its parent's hash, hash(parent_hash, tokens), so a
later request whose tokens start the same way reuses the block instead of recomputing it.
A sealed block whose reference count drops to zero stays in the cache, reusable, until a new
allocation needs it; the least recently released one is evicted first.
"""
from collections import OrderedDict, deque

import numpy as np
import torch

from engine.request import Request


class BlockManager:
    """Owns block ids 0..num_blocks-1 and the block table of every admitted request."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self.block_tokens: list[tuple | None] = [None] * num_blocks
        self.free_ids = deque(range(num_blocks))  # unreferenced and not in the prefix cache
        self.evictable: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced; LRU first
        self.cached: dict[int, int] = {}  # block hash -> block id
        self.block_tables = np.zeros((8, 8), dtype=np.int32)  # row r: the table of the request holding r
        self.free_rows: list[int] = list(range(7, -1, -1))

    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation can take: never-cached ones plus evictable cached ones."""
        return len(self.free_ids) + len(self.evictable)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _block_hashes(self, req: Request, num_full_blocks: int) -> list[int]:
        hashes, bs = req.block_hashes, self.block_size
        while len(hashes) < num_full_blocks:
            i = len(hashes)
            parent = hashes[-1] if hashes else None
            hashes.append(hash((parent, tuple(req.token_ids(i * bs, (i + 1) * bs)))))
        return hashes[:num_full_blocks]

    def match_prefix(self, req: Request) -> list[int]:
        """Cached blocks holding the request's leading full blocks.

        Only blocks before the last token count: a step must compute at least one token to
        produce logits, and it must not write into a block that others share.
        """
        if not self.enable_prefix_caching:
            return []
        bs = self.block_size
        hits = []
        for i, h in enumerate(self._block_hashes(req, (req.num_tokens - 1) // bs)):
            block = self.cached.get(h)
            if block is None or self.block_tokens[block] != tuple(req.token_ids(i * bs, (i + 1) * bs)):
                break
            hits.append(block)
        return hits

    def can_allocate(self, hits: list[int], num_tokens: int) -> bool:
        """Whether a request with no blocks can cover `num_tokens` tokens, reusing `hits`."""
        reused_evictable = sum(1 for b in hits if b in self.evictable)
        fresh = self.blocks_for(num_tokens) - len(hits)
        return fresh + reused_evictable <= self.num_free_blocks

    def allocate(self, req: Request, hits: list[int], num_tokens: int) -> None:
        """Give a request with no blocks the cached `hits`, then fresh blocks up to `num_tokens`."""
        assert not req.block_table, "allocate() is for a request without blocks"
        for block in hits:
            self.evictable.pop(block, None)
            self.ref_counts[block] += 1
        req.row = self._take_row()
        req.block_table = list(hits)
        self._ensure_width(len(hits))
        self.block_tables[req.row, : len(hits)] = hits
        req.num_sealed_blocks = len(hits)
        self.append_slots(req, num_tokens)

    def can_append(self, req: Request, num_tokens: int) -> bool:
        return self.blocks_for(num_tokens) - len(req.block_table) <= self.num_free_blocks

    def append_slots(self, req: Request, num_tokens: int) -> None:
        """Grow the request's block table to hold `num_tokens` tokens."""
        needed = self.blocks_for(num_tokens)
        if needed <= len(req.block_table):
            return
        self._ensure_width(needed)
        row = self.block_tables[req.row]
        for i in range(len(req.block_table), needed):
            block = self._take_free_block()
            self.ref_counts[block] = 1
            req.block_table.append(block)
            row[i] = block

    def rollback(self, req: Request, num_tokens: int) -> None:
        """Release the request's blocks past those `num_tokens` tokens need: after speculative
        decoding, the blocks that only held rejected draft tokens. Such a block was never
        sealed (only blocks full of computed, accepted tokens are) nor shared, so it goes
        straight back to the free list; the prefix cache is untouched."""
        keep = self.blocks_for(num_tokens)
        while len(req.block_table) > keep:
            block = req.block_table.pop()
            assert self.ref_counts[block] == 1 and self.block_hash[block] is None, "rollback of a shared block"
            self.ref_counts[block] = 0
            self.free_ids.append(block)

    def seal_computed(self, req: Request) -> None:
        """Register the request's newly completed full blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        num_full = req.num_computed_tokens // bs
        if num_full <= req.num_sealed_blocks:
            return
        hashes = self._block_hashes(req, num_full)
        for i in range(req.num_sealed_blocks, num_full):
            block, h = req.block_table[i], hashes[i]
            if h not in self.cached:  # else an identical block is already cached: keep that one
                self.cached[h] = block
                self.block_hash[block] = h
                self.block_tokens[block] = tuple(req.token_ids(i * bs, (i + 1) * bs))
        req.num_sealed_blocks = num_full

    def free(self, req: Request) -> None:
        """Release every block of the request; sealed ones stay cached until evicted.

        The tail is released first so that it is evicted first: a prefix stays useful longer.
        """
        for block in reversed(req.block_table):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                if self.block_hash[block] is not None:
                    self.evictable[block] = None
                else:
                    self.free_ids.append(block)
        req.block_table = []
        req.num_sealed_blocks = 0
        if req.row is not None:
            self.free_rows.append(req.row)
            req.row = None

    def _take_row(self) -> int:
        if not self.free_rows:  # double the rows; the new ones are handed out lowest first
            rows = len(self.block_tables)
            self.block_tables = np.concatenate([self.block_tables, np.zeros_like(self.block_tables)])
            self.free_rows = list(range(2 * rows - 1, rows - 1, -1))
        return self.free_rows.pop()

    def _ensure_width(self, num_blocks: int) -> None:
        width = self.block_tables.shape[1]
        if num_blocks > width:
            grown = np.zeros((len(self.block_tables), max(num_blocks, 2 * width)), dtype=np.int32)
            grown[:, :width] = self.block_tables
            self.block_tables = grown

    def _take_free_block(self) -> int:
        if self.free_ids:
            return self.free_ids.popleft()
        if not self.evictable:
            raise RuntimeError("KV cache out of blocks (the scheduler checks before allocating)")
        block, _ = self.evictable.popitem(last=False)
        del self.cached[self.block_hash[block]]
        self.block_hash[block] = self.block_tokens[block] = None
        return block


def bytes_per_block(num_layers, block_size, num_kv_heads, head_dim, dtype) -> int:
    """Keys and values of every layer for one block of tokens."""
    return 2 * num_layers * block_size * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def num_blocks_for_budget(config, model, dtype, max_model_len, extra_bytes_per_block=0) -> int:
    """Blocks that fit the memory budget, capped at what max_num_seqs full-length sequences use.
    `extra_bytes_per_block`: what another cache of as many blocks takes per block (a draft
    model's, under speculative decoding), so that both fit the budget."""
    if config.num_kv_blocks is not None:
        return config.num_kv_blocks
    per_block = bytes_per_block(model.num_layers, config.block_size, model.num_kv_heads, model.head_dim, dtype)
    per_block += extra_bytes_per_block
    if torch.device(config.device).type == "cuda":
        free_bytes, _ = torch.cuda.mem_get_info(torch.device(config.device))
        budget = int(free_bytes * config.gpu_memory_utilization)
    else:
        budget = config.cpu_kv_cache_bytes
    useful = config.max_num_seqs * -(-max_model_len // config.block_size)
    num_blocks = min(budget // per_block, useful)
    if num_blocks < 1:
        raise ValueError(
            f"the KV cache budget ({budget} bytes) does not hold one block ({per_block} bytes); "
            "raise gpu_memory_utilization / cpu_kv_cache_bytes or set num_kv_blocks"
        )
    return num_blocks


def allocate_kv_cache(model, num_blocks, block_size, dtype, device):
    """Per-layer (k_cache, v_cache), each [num_blocks, block_size, Hkv, D], bound to the model's
    layers. The layers' shapes are checked here once, so the kernels run unchecked per step.
    Zeroed, so a graph's padding rows (which read block 0) stay finite."""
    layers = list(model.attention_layers())
    if len(layers) != model.num_layers:
        raise ValueError(f"the model lists {len(layers)} attention layers for {model.num_layers} layers")
    for i, layer in enumerate(layers):
        if (layer.num_kv_heads, layer.head_dim) != (model.num_kv_heads, model.head_dim):
            raise ValueError(f"attention layer {i} has {layer.num_kv_heads} kv heads of {layer.head_dim}, "
                             f"the cache {model.num_kv_heads} of {model.head_dim}")
        if layer.num_heads % layer.num_kv_heads:
            raise ValueError(f"attention layer {i}: {layer.num_heads} query heads are not a multiple "
                             f"of its {layer.num_kv_heads} kv heads")
    shape = (model.num_layers, num_blocks, block_size, model.num_kv_heads, model.head_dim)
    k_cache = torch.zeros(shape, dtype=dtype, device=device)
    v_cache = torch.zeros(shape, dtype=dtype, device=device)
    for i, layer in enumerate(layers):
        layer.k_cache, layer.v_cache = k_cache[i], v_cache[i]
    return k_cache, v_cache
