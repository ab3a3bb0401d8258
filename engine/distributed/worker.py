"""A worker rank: loads its shard, then runs what rank 0 announces until STOP.

    spawn_main   entry of a process the engine spawned: meets rank 0 through its TCPStore,
                 exits when rank 0's process dies, reports its error through a pipe
    serve        the loop (also what ranks > 0 run under torchrun): receive a header ->
                 receive the step buffer / hidden rows -> run the same forward, logits or
                 graph replay as rank 0, joining its collectives

A worker keeps no outputs: hidden states and logits are rank 0's; the worker only takes part
in the collectives that produce them. Its KV cache has as many blocks as rank 0's (agreed
at start) and holds its own kv heads.
"""
import os
import sys
import threading
import time
import traceback

import torch
import torch.distributed as dist

from engine.cuda_graphs import DecodeGraphs
from engine.distributed import messages
from engine.distributed.parallel import all_gather_single
from engine.distributed.rank import (
    START_TIMEOUT, init_groups, load_shard, local_num_blocks, min_over_ranks, rank_config, rank_device,
)
from engine.kv_cache import allocate_kv_cache


def spawn_main(rank, size, store_port, config, parent_pid, error_pipe, num_threads):
    """Entry point of a spawned worker process."""
    _exit_with_parent(parent_pid)
    torch.set_num_threads(num_threads)
    try:
        store = dist.TCPStore("127.0.0.1", store_port, size, is_master=False, timeout=START_TIMEOUT)
        store.set(f"joined/{rank}", "1")
        device = rank_device(config.device, rank)
        tp, control = init_groups(config, rank, size, device, store)
        serve(rank_config(config, device), tp, control)
    except BaseException:  # noqa: BLE001 - whatever it was, rank 0 must learn it
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        error_pipe.send(text)
        os._exit(1)  # at once: rank 0 waits for this exit to name the failure
    error_pipe.close()
    dist.destroy_process_group()


def _exit_with_parent(parent_pid):
    """End this process within a second of rank 0's process dying, whatever it is doing."""
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _wait(work):
    work.wait()


@torch.inference_mode()
def serve(config, tp, control) -> None:
    """Load this rank's shard, agree on the KV cache with the others, then serve until STOP."""
    loaded = load_shard(config, tp)
    model, device = loaded.model, torch.device(config.device)
    dtype = next(model.parameters()).dtype
    num_blocks = min_over_ranks(local_num_blocks(config, loaded), control, _wait)
    if num_blocks:
        allocate_kv_cache(model, num_blocks, config.block_size, dtype, device)
    head = torch.empty(messages.HEADER_LEN, dtype=torch.int64)
    graphs = None
    while True:
        dist.broadcast(head, 0, group=control)
        op, *fields = head.tolist()
        if op == messages.STOP:
            return
        if op in (messages.FORWARD, messages.GRAPH_STEP):
            flat = torch.empty(messages.step_buffer_size(fields), dtype=torch.int32, device=device)
            dist.broadcast(flat, 0, group=tp.group)
            inputs = messages.unpack_step(fields, flat)
            if op == messages.FORWARD:
                model(inputs.input_ids, inputs.positions, inputs.meta)
            else:
                graphs.run(inputs)
        elif op == messages.LOGITS:
            rows, hidden_size = fields[-2], fields[-1]
            hidden = torch.empty(rows, hidden_size, dtype=dtype, device=device)
            dist.broadcast(hidden, 0, group=tp.group)
            model.compute_logits(hidden)
        elif op == messages.CAPTURE:
            max_batch, max_blocks = fields[0], fields[1]
            graphs = DecodeGraphs(model, device, max_batch, max_blocks)
            graphs.capture_all()
        elif op == messages.MEMORY:
            report = messages.memory_report(model)
            all_gather_single(report.new_empty(tp.size * report.numel()), report, group=control)
        else:
            raise RuntimeError(f"unknown tensor-parallel operation {op}")
