"""Keep the host heap at its working size, so steady-state CPU steps do not page-fault.

glibc's malloc hands the top of its heap back to the OS whenever more than M_TRIM_THRESHOLD
bytes are free there, and serves blocks above M_MMAP_THRESHOLD with fresh mappings; both
start at 128 KiB and only grow as larger blocks come and go. A CPU forward allocates and
frees a few MB of activations per layer, so a step can hand its heap back at the end and
fault every page in again at the next one. Measured on the bundled cmlm-bert (fp32, one
thread), the report's mask-predict decode at batch 64, T = 1 took ~1,400-1,900 minor faults
and 3-4 ms of system time, over a tenth of its time; with the thresholds fixed, under 25.

`keep_heap(device)` fixes both thresholds once per process when the device is a CPU: blocks
up to 32 MiB (glibc's largest dynamic mmap threshold) come from the heap, and up to 256 MiB
of free heap stays mapped. The setting is process-wide, glibc only, and applied where a CPU
model starts (Engine, tensor-parallel workers); on CUDA, activations come from torch's caching
allocator instead. Set DUODECODE_MALLOC_TUNING=0 to leave malloc as it is (with an
LD_PRELOADed tcmalloc or jemalloc, for one).
"""
import ctypes
import os
import platform

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20

_applied = False


def keep_heap(device) -> bool:
    """For a model on `device`: fix glibc's trim and mmap thresholds (idempotent); False where
    that does not apply (not a CPU device, not glibc, or switched off)."""
    global _applied
    if torch.device(device).type != "cpu":
        return False
    if _applied:
        return True
    if os.environ.get("DUODECODE_MALLOC_TUNING") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # returns 1 on success
    _applied = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _applied
