"""Parallel layers: each rank holds a slice of a layer's weights (Megatron-LM's split).

    ColumnParallelLinear    y_r = x W_r^T + b_r: the output features are split and stay on
                            their rank (the next layer is row-parallel, or the attention of
                            the rank's own heads), so no collective.
    QKVParallelLinear       the fused q/k/v projection, split by heads; when there are fewer
                            key/value heads than ranks each rank holds a copy of the one its
                            query heads attend with.
    RowParallelLinear       y = sum_r x_r W_r^T + b: the input features are split; one
                            all-reduce, then the bias once.
    VocabParallelEmbedding  the vocabulary rows are split (padded to a multiple of the ranks);
                            each rank embeds the ids it holds, zeros elsewhere, one all-reduce.
    ParallelLMHead          the same split of the head's rows; the ranks' logits are gathered
                            side by side and the padding columns dropped.

At tensor_parallel_size 1 every layer is the plain one (nn.Linear's forward, F.embedding): no
collective and no extra copy. For the loader, each layer answers `shard_of(leaf)`: the part
of the checkpoint tensor it holds (engine.models.weights.Shard), None when it holds all of it.
"""
import torch
import torch.nn.functional as F
from torch import nn

from engine.distributed.parallel import ShardingError, TensorParallel, split_evenly
from engine.models.weights import Shard


class ColumnParallelLinear(nn.Linear):
    """Fused projections whose outputs are concatenated (`output_sizes`), each split into
    `shards[i]` pieces (default: one per rank); rank r holds piece r * shards[i] // size of
    each, so a part with fewer pieces than ranks is replicated on consecutive ranks."""

    def __init__(self, input_size, output_sizes, bias, tp: TensorParallel, shards=None,
                 what="output features"):
        shards = shards or (tp.size,) * len(output_sizes)
        widths = [split_evenly(size, pieces, what) for size, pieces in zip(output_sizes, shards)]
        super().__init__(input_size, sum(widths), bias=bias)
        ranges, offset = [], 0
        for size, pieces, width in zip(output_sizes, shards, widths):
            start = offset + (tp.rank * pieces // tp.size) * width
            ranges.append((start, start + width))
            offset += size
        self._shard = None if tp.size == 1 else Shard(0, offset, tuple(ranges))

    def shard_of(self, leaf):
        return self._shard  # weight rows and bias entries alike


class QKVParallelLinear(ColumnParallelLinear):
    """q, k, v fused; the rank's `num_heads` query and `num_kv_heads` key/value heads."""

    def __init__(self, hidden, head_dim, num_heads, num_kv_heads, bias, tp: TensorParallel):
        heads = split_evenly(num_heads, tp.size, "attention heads")
        if num_kv_heads >= tp.size:
            kv_shards, kv_heads = tp.size, split_evenly(num_kv_heads, tp.size, "key/value heads")
        elif tp.size % num_kv_heads:
            raise ShardingError(f"tensor_parallel_size {tp.size} exceeds the {num_kv_heads} key/value heads and "
                             f"must then be a multiple of them (each rank holds a copy of one)")
        else:
            kv_shards, kv_heads = num_kv_heads, 1
        q_size, kv_size = num_heads * head_dim, num_kv_heads * head_dim
        super().__init__(hidden, (q_size, kv_size, kv_size), bias, tp, shards=(tp.size, kv_shards, kv_shards))
        self.num_heads, self.num_kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.split_sizes = (heads * head_dim, kv_heads * head_dim, kv_heads * head_dim)


class RowParallelLinear(nn.Linear):
    def __init__(self, input_size, output_size, bias, tp: TensorParallel, what="input features"):
        width = split_evenly(input_size, tp.size, what)
        super().__init__(width, output_size, bias=bias)
        self.tp = tp
        start = tp.rank * width
        self._shard = None if tp.size == 1 else Shard(1, input_size, ((start, start + width),))

    def shard_of(self, leaf):
        return self._shard if leaf == "weight" else None  # the bias is added once, after the sum

    def forward(self, x):
        if self.tp.size == 1:
            return super().forward(x)
        y = self.tp.all_reduce(F.linear(x, self.weight))
        return y if self.bias is None else y.add_(self.bias)


def _vocab_split(vocab_size, tp):
    """(rows per rank, first row of this rank, its Shard or None)."""
    rows = -(-vocab_size // tp.size)
    start = tp.rank * rows
    held = (min(start, vocab_size), min(start + rows, vocab_size))  # the last ranks hold padding
    return rows, start, None if tp.size == 1 else Shard(0, vocab_size, (held,))


class VocabParallelEmbedding(nn.Module):
    def __init__(self, num_embeddings, embedding_dim, tp: TensorParallel):
        super().__init__()
        self.tp = tp
        self.rows, self.start, self._shard = _vocab_split(num_embeddings, tp)
        self.weight = nn.Parameter(torch.empty(self.rows, embedding_dim), requires_grad=False)

    def shard_of(self, leaf):
        return self._shard

    def forward(self, ids):
        if self.tp.size == 1:
            return F.embedding(ids, self.weight)
        local = ids - self.start
        outside = (local < 0) | (local >= self.rows)
        out = F.embedding(local.masked_fill(outside, 0), self.weight)
        return self.tp.all_reduce(out.masked_fill_(outside.unsqueeze(-1), 0))


class ParallelLMHead(nn.Module):
    """hidden [N, H] -> logits [N, vocab_size] on every rank."""

    def __init__(self, hidden_size, vocab_size, bias, tp: TensorParallel):
        super().__init__()
        self.tp, self.vocab_size = tp, vocab_size
        rows, _, self._shard = _vocab_split(vocab_size, tp)
        self.weight = nn.Parameter(torch.empty(rows, hidden_size), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(rows), requires_grad=False) if bias else None

    def shard_of(self, leaf):
        return self._shard

    def forward(self, hidden):
        logits = F.linear(hidden, self.weight, self.bias)
        if self.tp.size == 1:
            return logits
        logits = self.tp.all_gather_columns(logits)
        return logits if logits.shape[1] == self.vocab_size else logits[:, : self.vocab_size].contiguous()
