"""What every rank does to join a tensor-parallel engine, rank 0 and workers alike.

    init_groups       the device group (nccl on CUDA, gloo on CPU) for the model's
                      collectives and the step buffer, and a gloo control group for headers
    load_shard        this rank's shard of the checkpoint (engine.models.loader, with `tp`)
    agree_num_blocks  the KV cache blocks every rank can hold: the smallest of their budgets

Timeouts: a collective of the device group fails after COLLECTIVE_TIMEOUT (a worker stuck in
a step); the control group waits up to IDLE_TIMEOUT, because an idle worker waits there for
the next step for as long as the engine is idle. Rank 0 never waits that long on it: it
polls its control operations and the workers' liveness (engine.distributed.group).
"""
import dataclasses
from datetime import timedelta

import torch
import torch.distributed as dist

from engine.distributed.parallel import TensorParallel
from engine.host_memory import keep_heap
from engine.kv_cache import num_blocks_for_budget
from engine.models.loader import load_model

COLLECTIVE_TIMEOUT = timedelta(minutes=10)
START_TIMEOUT = timedelta(minutes=10)  # worker start-up: imports, rendezvous
IDLE_TIMEOUT = timedelta(days=365)


def rank_device(device: str, local_rank: int) -> str:
    """Rank r computes on the r-th CUDA device after the configured one (or on the CPU)."""
    parsed = torch.device(device)
    if parsed.type != "cuda":
        return "cpu"
    return f"cuda:{(parsed.index or 0) + local_rank}"


def backend_for(device: str) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_groups(config, rank: int, size: int, device: str, store=None):
    """(TensorParallel of this rank, control group) once the processes have met: through
    `store` (spawned workers) or the torchrun environment (store None)."""
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        rendezvous = {"store": store} if store is not None else {"init_method": "env://"}
        dist.init_process_group(backend, rank=rank, world_size=size, timeout=COLLECTIVE_TIMEOUT, **rendezvous)
    control = dist.new_group(backend="gloo", timeout=IDLE_TIMEOUT)
    return TensorParallel(rank, size, dist.group.WORLD), control


def rank_config(config, device: str):
    """The rank's copy of the engine config: its own device."""
    return dataclasses.replace(config, device=device)


def load_shard(config, tp: TensorParallel):
    keep_heap(config.device)  # as an Engine does (engine/host_memory.py)
    return load_model(config.model, config.dtype, config.device, config.kernel_backend, config.allow_pickle, tp)


def local_num_blocks(config, loaded) -> int:
    """The KV blocks this rank's budget holds (its own kv heads); 0 for a masked LM (no cache)."""
    if loaded.kind != "causal":
        return 0
    dtype = next(loaded.model.parameters()).dtype
    return num_blocks_for_budget(config, loaded.model, dtype, loaded.max_positions)


def min_over_ranks(value: int, control, wait) -> int:
    """The smallest `value` of all ranks; `wait(work)` waits for the collective."""
    t = torch.tensor([value], dtype=torch.int64)
    wait(dist.all_reduce(t, op=dist.ReduceOp.MIN, group=control, async_op=True))
    return int(t.item())
