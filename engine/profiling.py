"""Named ranges for profilers, and a Chrome-trace capture of a block of engine work.

`ranged(name)` marks a phase of a step (AR: schedule, prepare_inputs, forward, sample,
outputs; mask-predict: schedule, forward, predict, remask, detokenize). It costs one function
call when nothing is profiling; under torch.profiler it records a `record_function` range,
and on CUDA with NVTX switched on it also pushes an NVTX range for Nsight Systems. The switch:
`EngineConfig(enable_nvtx=True)` (`--enable-nvtx` on the CLI), the environment variable
DUODECODE_NVTX=1, or `enable_nvtx()`; NVTX is process-wide, so the switch is too.
`profile(path)` runs a block under torch.profiler and writes a Chrome/Perfetto trace.
"""
import os
from contextlib import contextmanager, nullcontext

import torch

_nvtx = os.environ.get("DUODECODE_NVTX") == "1"


def enable_nvtx(on: bool = True) -> None:
    global _nvtx
    _nvtx = on


@contextmanager
def _range(name):
    use_nvtx = _nvtx and torch.cuda.is_available()
    if use_nvtx:
        torch.cuda.nvtx.range_push(name)
    try:
        with torch.profiler.record_function(name):
            yield
    finally:
        if use_nvtx:
            torch.cuda.nvtx.range_pop()


def ranged(name: str):
    """A context manager marking `name` for the active profiler; a no-op otherwise."""
    if _nvtx or torch.autograd.profiler._is_profiler_enabled:
        return _range(name)
    return nullcontext()


@contextmanager
def profile(trace_path: str):
    """Run the block under torch.profiler (CPU, and CUDA when present); write a Chrome trace."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        yield prof
    prof.export_chrome_trace(trace_path)
