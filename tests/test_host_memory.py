"""A CPU engine keeps its heap: steady-state steps do not fault their activations back in.

Run in a fresh interpreter, because malloc's settings are process-wide. Measured with glibc
2.36 on this project's CPU machines (2026-12-02): the batch-64 decode below takes a median of
~4,400 minor page faults with DUODECODE_MALLOC_TUNING=0 and ~25 without. The median over
decodes, because an occasional decode takes a few hundred more either way (one in seven
measured 408 tuned): the interpreter maps and unmaps its own object arenas outside malloc.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from engine import host_memory

ROOT = Path(__file__).resolve().parents[1]
DECODE = """
import resource, statistics, torch
torch.set_num_threads(1)
from engine import LLM, MaskPredictParams
llm = LLM("benchmarks/assets/cmlm-bert", device="cpu", dtype="float32")
prompts = [[20 + i % 7, 21, 22, 23] for i in range(64)]
params = [MaskPredictParams(length=4 + 4 * (i % 4), iterations=2, seed=i) for i in range(64)]
for _ in range(3):  # warm-up: the heap grows to its working size
    llm.generate(prompts, params)
faults = []
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    llm.generate(prompts, params)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(faults), faults)
"""


def _faults_per_decode(env_value):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "DUODECODE_MALLOC_TUNING": env_value}
    done = subprocess.run([sys.executable, "-c", DECODE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    median, faults = done.stdout.strip().splitlines()[-1].split(" ", 1)
    return float(median), faults


def test_steady_state_decodes_do_not_fault():
    if not host_memory.keep_heap("cpu"):
        pytest.skip("malloc is not glibc's here")
    median, faults = _faults_per_decode("1")
    assert median < 100, f"minor page faults per decode: {faults}"


def test_the_tuning_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(host_memory, "_applied", False)
    monkeypatch.setenv("DUODECODE_MALLOC_TUNING", "0")
    assert host_memory.keep_heap("cpu") is False


def test_only_a_cpu_model_tunes_malloc(monkeypatch):
    monkeypatch.setattr(host_memory, "_applied", False)
    assert host_memory.keep_heap("cuda") is False and host_memory._applied is False
