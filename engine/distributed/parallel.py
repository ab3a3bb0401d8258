"""TensorParallel: which shard of a model this process holds, and the collectives it joins.

A model family is built with a TensorParallel; its parallel layers (engine.distributed.layers)
keep 1/size of the weights and call `all_reduce` / `all_gather` where the math needs the
other ranks' parts. With size 1 (the default, `SINGLE`) no layer calls a collective.
"""
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# all_gather_into_tensor was renamed all_gather_single in torch 2.13 (the GPU machine runs 2.11)
all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@dataclass(frozen=True)
class TensorParallel:
    rank: int = 0
    size: int = 1
    group: Any = None  # the process group of the layers' collectives; None when nothing runs them

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum x over the ranks, in place; returns x."""
        dist.all_reduce(x, group=self.group)
        return x

    def all_gather_columns(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's [N, C] block side by side: [N, size * C], rank order."""
        rows, cols = x.shape
        out = torch.empty(self.size * rows, cols, dtype=x.dtype, device=x.device)
        all_gather_single(out, x.contiguous(), group=self.group)
        return out.view(self.size, rows, cols).permute(1, 0, 2).reshape(rows, self.size * cols)


SINGLE = TensorParallel()


class ShardingError(ValueError):
    """A model that cannot be split into tensor_parallel_size shards."""


def split_evenly(total: int, size: int, what: str) -> int:
    """total / size; a ShardingError naming `what` when size does not divide it."""
    if total % size:
        raise ShardingError(f"tensor_parallel_size {size} must divide the {total} {what}")
    return total // size
