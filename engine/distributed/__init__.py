"""Tensor parallelism (Megatron-style) over torch.distributed; docs/tensor-parallel.md.

    parallel.py   TensorParallel: this rank's place in the group and its two collectives
    layers.py     column/row-parallel linears, the vocabulary-parallel embedding and LM head
    messages.py   how rank 0 tells the workers what to run (a header and one flat buffer)
    driver.py     TensorParallelModel: rank 0's model, which runs every call on all ranks
    group.py      WorkerGroup: rank 0's handle on the workers, their failures and their end
    rank.py       what every rank does to join: process groups, its shard, the KV cache size
    worker.py     the worker processes' loop
    launch.py     starting a tensor-parallel engine (spawned workers or torchrun)

The package's __init__ imports nothing: the model families import `parallel` and `layers`,
and the loader they depend on is imported by `launch`, so eager imports here would cycle.
"""
