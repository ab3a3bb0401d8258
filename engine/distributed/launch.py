"""Starting a tensor-parallel engine: `start_tensor_parallel(config)` -> (LoadedModel whose
model is a TensorParallelModel, the config rank 0's executor runs with).

1. Before any process starts, the model must split: it is built on the meta device as rank
   0's shard, so a tensor_parallel_size that does not divide its heads, kv heads or MLP is a
   ValueError naming them; and torch.distributed must not be in use by another engine of
   this process (one tensor-parallel engine per process at a time).
2. Spawned workers (the default): rank 0 opens a TCPStore on 127.0.0.1 at a port the OS
   picks, starts ranks 1..N-1 from torch.multiprocessing's spawn context (each is given the
   port, the config, this process's pid to watch and a pipe for its error) and waits for
   them to join while checking that they live.
   Under torchrun (RANK and WORLD_SIZE in the environment; WORLD_SIZE must equal
   tensor_parallel_size) the launcher did the rendezvous: ranks > 0 serve rank 0 inside
   this call and then end their process with SystemExit(0), so only rank 0 runs the code
   after the LLM/Engine constructor.
3. Every rank loads its own shard and sizes its KV cache from its budget; the smallest
   number of blocks wins, the workers allocate it and rank 0's executor gets it as
   num_kv_blocks.
"""
import dataclasses
import os

import torch
import torch.distributed as dist

from engine.backend import get_ops
from engine.distributed.driver import TensorParallelModel
from engine.distributed.group import TensorParallelError, WorkerGroup
from engine.distributed.parallel import TensorParallel
from engine.distributed.rank import (
    START_TIMEOUT, init_groups, load_shard, local_num_blocks, min_over_ranks, rank_config, rank_device,
)
from engine.distributed.worker import serve, spawn_main
from engine.models.loader import build_model, read_architecture, read_config


def check_model_splits(config) -> None:
    """ValueError when the checkpoint cannot be split into config.tensor_parallel_size shards."""
    architecture, _ = read_architecture(config.model)
    hf_config = read_config(config.model)
    try:
        build_model(architecture, hf_config, get_ops(config.kernel_backend), TensorParallel(0, config.tensor_parallel_size))
    except ValueError as e:
        raise ValueError(f"{config.model}: {e}") from None


def start_tensor_parallel(config):
    check_model_splits(config)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return _join_torchrun(config)
    if dist.is_initialized():
        raise TensorParallelError("torch.distributed is already initialized in this process: close the other "
                           "tensor-parallel engine first (one per process)")
    size = config.tensor_parallel_size
    store = dist.TCPStore("127.0.0.1", 0, size, is_master=True, timeout=START_TIMEOUT, wait_for_workers=False)
    ctx = torch.multiprocessing.get_context("spawn")
    processes, pipes = [], []
    for rank in range(1, size):
        receiver, sender = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=spawn_main, name=f"duodecode-tp-rank{rank}", daemon=True,
            args=(rank, size, store.port, config, os.getpid(), sender, torch.get_num_threads()))
        process.start()
        sender.close()
        processes.append(process)
        pipes.append(receiver)
    group = WorkerGroup(processes, pipes, owns_groups=True)
    try:
        group.wait_joined(store, [f"joined/{rank}" for rank in range(1, size)])
        device = rank_device(config.device, 0)
        group.attach(*init_groups(config, 0, size, device, store))
        return _start_rank0(rank_config(config, device), group)
    except BaseException as e:
        group.abort(f"start-up failed: {e!r}")
        raise


def _join_torchrun(config):
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if size != config.tensor_parallel_size:
        raise ValueError(f"tensor_parallel_size ({config.tensor_parallel_size}) must equal torchrun's "
                         f"WORLD_SIZE ({size})")
    owns_groups = not dist.is_initialized()
    device = rank_device(config.device, int(os.environ.get("LOCAL_RANK", rank)))
    tp, control = init_groups(config, rank, size, device)
    if rank != 0:
        serve(rank_config(config, device), tp, control)
        if owns_groups:
            dist.destroy_process_group()
        raise SystemExit(0)
    group = WorkerGroup([], [], owns_groups)
    group.attach(tp, control)
    try:
        return _start_rank0(rank_config(config, device), group)
    except BaseException as e:
        group.abort(f"start-up failed: {e!r}")
        raise


def _start_rank0(config, group: WorkerGroup):
    """Rank 0's shard, wrapped, and the executor's config with the agreed KV cache size."""
    loaded = load_shard(config, group.tp)
    num_blocks = min_over_ranks(local_num_blocks(config, loaded), group.control, group.wait)
    model = TensorParallelModel(loaded.model, group)
    executor_config = dataclasses.replace(config, num_kv_blocks=num_blocks) if num_blocks else config
    return dataclasses.replace(loaded, model=model), executor_config
