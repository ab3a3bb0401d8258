"""Runs one scheduled step: flat input tensors -> model forward -> logits of the sampling rows.

The step's new tokens are packed flat (sequence b owns rows cu_seqlens_q[b]:cu_seqlens_q[b+1])
with their positions, the cache slot each token's k/v goes to, each sequence's context
length (cached + new) and its block table. Only sequences whose last known token is in the
step sample, so only their last rows go through the LM head; a mid-prompt chunk does not.

On CUDA (unless enforce_eager), decode steps replay CUDA graphs captured per batch-size
bucket (1, 2, 4, 8, ...) over static input buffers, as vLLM and nano-vllm do: a decode step
is many small kernels whose launch cost would otherwise dominate. Larger batches and
prefill steps run eagerly.
"""
import warnings

import torch

from engine.attention import AttentionMetadata
from engine.kv_cache import allocate_kv_cache
from engine.profiling import ranged
from engine.scheduler import ScheduledBatch


def attention_mode(starts: list[int], counts: list[int]) -> str:
    """Which attention kernel serves a step whose sequences compute counts[b] tokens from starts[b]."""
    if all(s == 0 for s in starts):
        return "prefill"  # no cached context: attention over the step's own k/v
    if all(n == 1 for n in counts):
        return "decode"
    return "paged_prefill"


def graph_buckets(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to max_batch, and max_batch itself."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


class ModelRunner:
    def __init__(self, model, config, num_blocks: int, dtype: torch.dtype, max_model_len: int):
        self.model = model
        self.device = torch.device(config.device)
        self.block_size = config.block_size
        self.max_blocks_per_seq = -(-max_model_len // config.block_size)
        self.k_cache, self.v_cache = allocate_kv_cache(model, num_blocks, config.block_size, dtype, self.device)
        use_graphs = self.device.type == "cuda" and not config.enforce_eager
        self.graphs = _DecodeGraphs(self, min(config.cuda_graph_max_batch, config.max_num_seqs)) if use_graphs else None

    def prepare(self, batch: ScheduledBatch):
        """Flat int tensors for the step, its metadata, and the rows whose logits are needed."""
        bs = self.block_size
        ids, positions, slots, cu, context_lens, sample_rows = [], [], [], [0], [], []
        starts = [req.num_computed_tokens for req in batch.requests]
        for req, start, n in zip(batch.requests, starts, batch.num_new_tokens):
            end = start + n
            table = req.block_table
            ids += req.token_ids(start, end)
            positions += range(start, end)
            slots += [table[p // bs] * bs + p % bs for p in range(start, end)]
            cu.append(cu[-1] + n)
            context_lens.append(end)
            if end == req.num_tokens:
                sample_rows.append(cu[-1] - 1)
        width = max(len(req.block_table) for req in batch.requests)
        tables = [req.block_table + [0] * (width - len(req.block_table)) for req in batch.requests]
        dev, pinned = self.device, self.device.type == "cuda"

        def tensor(values, dtype=torch.int32):
            # On CUDA: staged in pinned memory so the copy does not block the host.
            return torch.tensor(values, dtype=dtype, pin_memory=pinned).to(dev, non_blocking=True)

        meta = AttentionMetadata(
            mode=attention_mode(starts, batch.num_new_tokens),
            cu_seqlens_q=tensor(cu),
            slot_mapping=tensor(slots),
            context_lens=tensor(context_lens),
            block_tables=tensor(tables),
        )
        return tensor(ids, torch.long), tensor(positions, torch.long), meta, sample_rows

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> torch.Tensor | None:
        """fp32 logits [N, V] for the N sequences of the batch that sample, in batch order."""
        with ranged("prepare_inputs"):
            input_ids, positions, meta, sample_rows = self.prepare(batch)
        with ranged("forward"):
            if self.graphs is not None and meta.mode == "decode" and len(batch) <= self.graphs.max_batch:
                hidden = self.graphs.run(input_ids, positions, meta)
            else:
                hidden = self.model.forward(input_ids, positions, meta)
            if not sample_rows:
                return None
            rows = torch.tensor(sample_rows, dtype=torch.long, device=self.device)
            return self.model.compute_logits(hidden[rows])


class _DecodeGraphs:
    """CUDA graphs of the decode forward, one per batch-size bucket, captured on first use.

    Padding rows of a bucket write nowhere (slot -1) and attend to one cached row of block 0,
    so they stay finite; their outputs are dropped.
    """

    def __init__(self, runner: ModelRunner, max_batch: int):
        self.runner, self.max_batch = runner, max_batch
        self.buckets = graph_buckets(max_batch)
        dev, n = runner.device, max_batch
        self.input_ids = torch.zeros(n, dtype=torch.long, device=dev)
        self.positions = torch.zeros(n, dtype=torch.long, device=dev)
        self.slot_mapping = torch.full((n,), -1, dtype=torch.int32, device=dev)
        self.context_lens = torch.ones(n, dtype=torch.int32, device=dev)
        self.block_tables = torch.zeros(n, runner.max_blocks_per_seq, dtype=torch.int32, device=dev)
        self.cu_seqlens = torch.arange(n + 1, dtype=torch.int32, device=dev)
        self.graphs, self.outputs = {}, {}
        self.pool = torch.cuda.graph_pool_handle()

    def _meta(self, b):
        return AttentionMetadata("decode", self.cu_seqlens[: b + 1], self.slot_mapping[:b],
                                 self.context_lens[:b], self.block_tables[:b])

    def _capture(self, b):
        model, meta = self.runner.model, self._meta(b)
        model.forward(self.input_ids[:b], self.positions[:b], meta)  # warm-up: compiles kernels
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.outputs[b] = model.forward(self.input_ids[:b], self.positions[:b], meta)
        self.graphs[b] = graph

    def run(self, input_ids, positions, meta):
        n = input_ids.shape[0]
        b = next(size for size in self.buckets if size >= n)
        self.input_ids[:n] = input_ids
        self.positions[:n] = positions
        self.slot_mapping[:n] = meta.slot_mapping
        self.slot_mapping[n:b] = -1
        self.context_lens[:n] = meta.context_lens
        self.context_lens[n:b] = 1
        self.block_tables[:b] = 0
        self.block_tables[:n, : meta.block_tables.shape[1]] = meta.block_tables
        if b not in self.graphs:
            try:
                self._capture(b)
            except RuntimeError as e:  # a kernel that synchronises with the host cannot be captured
                warnings.warn(f"CUDA graph capture failed ({e}); decoding eagerly from now on")
                self.runner.graphs = None
                return self.runner.model.forward(input_ids, positions, meta)
        self.graphs[b].replay()
        return self.outputs[b][:n]
