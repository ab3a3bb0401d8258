"""CUDA graphs of the decode step, one per batch-size bucket, captured at engine start.

A decode step is many small kernels whose launch cost would otherwise dominate, so, as vLLM
and nano-vllm do, the runner replays a graph captured over static input buffers: the whole
forward, the LM head and the greedy argmax. A step of n sequences runs the smallest bucket
b >= n (buckets 1, 2, 4, 8, then every multiple of 8 up to the largest); its n rows are
copied into the buffers and the b - n padding rows write nowhere (slot -1) and attend to one
cached row of block 0 (context length 1), so they cost little and their outputs are dropped.
Block tables are as wide as the longest context the model serves, so one graph serves every
context length; the decode kernel reads each row's real length from context_lens.

`pad_inputs` is the graph's view of a step and runs on any device, so the padding is tested
on CPU too; capture and replay need CUDA.
"""
import torch
from tqdm import tqdm

from engine.attention import AttentionMetadata
from engine.step_inputs import StepInputs, forward_logits


def graph_buckets(max_batch: int) -> list[int]:
    """1, 2, 4, 8, 16, 24, ... (steps of 8) up to max_batch, and max_batch itself."""
    sizes = [b for b in (1, 2, 4) if b < max_batch] + list(range(8, max_batch, 8))
    return sizes + [max_batch]


class DecodeGraphs:
    def __init__(self, model, device, max_batch: int, max_blocks_per_seq: int):
        self.model, self.max_batch = model, max_batch
        self.buckets = graph_buckets(max_batch)
        n = max_batch
        self.input_ids = torch.zeros(n, dtype=torch.int32, device=device)
        self.positions = torch.zeros(n, dtype=torch.int32, device=device)
        self.slot_mapping = torch.full((n,), -1, dtype=torch.int32, device=device)
        self.context_lens = torch.ones(n, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(n, max_blocks_per_seq, dtype=torch.int32, device=device)
        self.cu_seqlens = torch.arange(n + 1, dtype=torch.int32, device=device)
        self.sample_rows = torch.arange(n, dtype=torch.int32, device=device)
        self.graphs, self.outputs = {}, {}

    def bucket(self, n: int) -> int:
        return next(size for size in self.buckets if size >= n)

    def _static(self, b: int) -> StepInputs:
        meta = AttentionMetadata("decode", self.cu_seqlens[: b + 1], self.slot_mapping[:b],
                                 self.context_lens[:b], self.block_tables[:b])
        return StepInputs(self.input_ids[:b], self.positions[:b], meta, self.sample_rows[:b])

    def pad_inputs(self, inputs, b: int):
        """Copy a decode step of n <= b sequences into the buffers; the bucket-b view of them."""
        n = inputs.input_ids.shape[0]
        meta = inputs.meta
        self.input_ids[:n] = inputs.input_ids
        self.positions[:n] = inputs.positions
        self.slot_mapping[:n] = meta.slot_mapping
        self.slot_mapping[n:b] = -1
        self.context_lens[:n] = meta.context_lens
        self.context_lens[n:b] = 1
        self.block_tables[:b] = 0
        self.block_tables[:n, : meta.block_tables.shape[1]] = meta.block_tables
        return self._static(b)

    def capture_all(self) -> None:
        """Capture every bucket, largest first so the smaller ones reuse its memory pool."""
        pool = torch.cuda.graph_pool_handle()
        for b in tqdm(sorted(self.buckets, reverse=True), desc="capturing CUDA graphs", unit="graph"):
            inputs = self._static(b)
            forward_logits(self.model, inputs)  # warm-up: compiles the kernels for this shape
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[b] = forward_logits(self.model, inputs)
            self.graphs[b] = graph

    def run(self, inputs):
        """(logits [n, V], greedy [n]) of a decode step, by replaying its bucket's graph."""
        n = inputs.input_ids.shape[0]
        b = self.bucket(n)
        self.pad_inputs(inputs, b)
        self.graphs[b].replay()
        logits, greedy = self.outputs[b]
        return logits[:n], greedy[:n]
