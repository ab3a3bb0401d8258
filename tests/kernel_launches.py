"""Counting real Triton launches, for the tests that bound how many kernels a step runs.

Every launch goes through the `run` of Triton's JIT function class (or of the interpreter's
stand-in on CPU), so recording there sees whatever a layer or a launcher starts.
"""
from kernels import norm_linear


def record_launches(monkeypatch):
    """A list that receives the name of every Triton kernel launched from now on."""
    launches = []
    kernel_class = type(norm_linear._rms_norm_linear_kernel)
    original_run = kernel_class.run

    def run(self, *args, **kwargs):
        launches.append(self.fn.__name__)
        return original_run(self, *args, **kwargs)

    monkeypatch.setattr(kernel_class, "run", run)
    return launches
