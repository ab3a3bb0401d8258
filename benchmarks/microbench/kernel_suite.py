"""What the kernel microbenchmark suites share: the device and dtype they run at, the two
implementations they compare, and a wrapper that times the work rather than the launch."""
import torch

import kernels
from kernels import reference

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.bfloat16 if CUDA else torch.float32  # the interpreter's bf16 dot is wrong
IMPLEMENTATIONS = {"triton": kernels, "reference": reference}


def synced(fn, *args):
    """A call of fn(*args) that waits for the GPU, so a benchmark round measures the work."""
    def run():
        out = fn(*args)
        if CUDA:
            torch.cuda.synchronize()
        return out
    return run
