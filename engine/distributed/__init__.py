"""Tensor parallelism (Megatron-style) over torch.distributed.

    parallel.py   TensorParallel: this rank's place in the group and its two collectives
    layers.py     column/row-parallel linears, the vocabulary-parallel embedding and LM head
    messages.py   how rank 0 tells the workers what to run (a header and one flat buffer)
    driver.py     TensorParallelModel: rank 0's model, which runs every step on all ranks
    worker.py     the worker processes' loop
    launch.py     starting the group (spawned workers or torchrun), its lifecycle and errors

The package's __init__ imports nothing: the model families import `parallel` and `layers`,
and the loader they depend on is imported by `launch`, so eager imports here would cycle.
"""
