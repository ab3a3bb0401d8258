"""TensorParallelModel: rank 0's model under tensor parallelism, with the protocol of one.

The executors call forward and compute_logits as on any model (engine.models.protocol); here
each call first announces itself to the workers (one header, then the step's flat buffer or
the hidden rows), then runs rank 0's shard, whose parallel layers meet the workers' in the
same collectives. So both decoding modes run unchanged. The model's attributes are rank 0's
shard's: `num_kv_heads` counts this rank's kv heads, which is what its KV cache holds.

CUDA graphs: rank 0's runner captures graphs of its own shard (ParallelDecodeGraphs) while
each worker captures the same buckets of its shard; a decode step then sends the step to the
workers, and every rank pads it and replays its graph of the same bucket.
"""
from torch import nn

from engine.cuda_graphs import DecodeGraphs
from engine.distributed import messages
from engine.distributed.group import WorkerGroup

PROTOCOL_ATTRIBUTES = ("vocab_size", "num_layers", "num_kv_heads", "head_dim", "max_positions")
MEMORY_FIELDS = ("weight_bytes", "kv_cache_bytes", "kv_blocks")


class TensorParallelModel(nn.Module):
    def __init__(self, local: nn.Module, workers: WorkerGroup):
        super().__init__()
        self.local = local  # rank 0's shard
        self.workers = workers
        for name in PROTOCOL_ATTRIBUTES:
            if hasattr(local, name):
                setattr(self, name, getattr(local, name))

    @property
    def tensor_parallel_size(self) -> int:
        return self.workers.tp.size

    def attention_layers(self):
        return self.local.attention_layers()

    def forward(self, input_ids, positions, meta, rows=None):
        """Every rank runs the step; rank 0's final hidden states [T, hidden] (replicated), or
        their rows `rows`: every rank computes all of them (the all-reduces need equal shapes)."""
        with self.workers.step():
            self.workers.send(*messages.pack_step(messages.FORWARD, input_ids, positions, meta))
            hidden = self.local(input_ids, positions, meta)
        return hidden if rows is None else hidden.index_select(0, rows)

    def compute_logits(self, hidden):
        """The hidden rows go to the workers; each rank computes its vocabulary slice and
        the slices are gathered: logits [N, vocab_size]."""
        hidden = hidden.contiguous()
        with self.workers.step():
            rows, hidden_size = hidden.shape
            self.workers.send(messages.header(messages.LOGITS, 0, 0, 0, 0, 0, rows, hidden_size), hidden)
            return self.local.compute_logits(hidden)

    def memory_per_rank(self) -> list[dict]:
        """Each rank's weight bytes, KV cache bytes and KV blocks, rank order."""
        with self.workers.step():
            self.workers.send(messages.header(messages.MEMORY))
            table = self.workers.gather(messages.memory_report(self.local))
        return [dict(zip(MEMORY_FIELDS, row)) for row in table.tolist()]

    @property
    def worker_pids(self) -> list[int]:
        return self.workers.worker_pids

    def close(self) -> None:
        """End the workers; the model cannot run afterwards."""
        self.workers.close()


class ParallelDecodeGraphs(DecodeGraphs):
    """Rank 0's decode graphs: of its own shard, each capture and replay done on all ranks."""

    def __init__(self, model: TensorParallelModel, device, max_batch: int, max_blocks_per_seq: int):
        super().__init__(model.local, device, max_batch, max_blocks_per_seq)
        self.workers = model.workers
        self.max_blocks_per_seq = max_blocks_per_seq

    def capture_all(self) -> None:
        with self.workers.step():
            self.workers.send(messages.header(messages.CAPTURE, self.max_batch, self.max_blocks_per_seq))
            super().capture_all()

    def run(self, inputs):
        with self.workers.step():
            self.workers.send(*messages.pack_step(
                messages.GRAPH_STEP, inputs.input_ids, inputs.positions, inputs.meta, inputs.sample_rows))
            return super().run(inputs)


def decode_graphs(model, device, max_batch: int, max_blocks_per_seq: int) -> DecodeGraphs:
    """The decode graphs the runner replays for `model` (tensor-parallel or not)."""
    graphs = ParallelDecodeGraphs if isinstance(model, TensorParallelModel) else DecodeGraphs
    return graphs(model, device, max_batch, max_blocks_per_seq)

