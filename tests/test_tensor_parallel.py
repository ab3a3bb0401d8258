"""Tensor parallelism on CPU (gloo, 2 processes) against tensor_parallel_size 1.

Each tensor-parallel engine starts a worker process (seconds on a 2-core machine), so a test
checks everything it can on one engine. Every test is bounded by a watchdog that ends the
run instead of hanging, and the last test checks that no worker process is left.
"""
import faulthandler
import gc
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from benchmarks import tensor_parallel as tp_benchmark
from engine import LLM, Engine, MaskPredictParams
from engine.attention import AttentionMetadata
from engine.config import check_tensor_parallel_size
from engine.distributed import messages
from engine.distributed.parallel import TensorParallel
from engine.models.loader import load_model
from tests.stress import ENGINE as STRESS_ENGINE
from tests.stress import run_requests, stress_requests
from tests.tiny_causal import make_gpt2, make_llama, make_qwen2
from tests.tiny_masked import make_masked_lm
from tests.tp_script import PARAMS as SCRIPT_PARAMS
from tests.tp_script import PROMPTS as SCRIPT_PROMPTS

TP = 2
PROMPTS = [[5, 6, 7], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [30], [40, 41, 42, 43, 44, 45]]
TEST_SECONDS = 300  # per test, on a busy 2-core machine; a hang ends the run with tracebacks
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPAWNED: list[int] = []  # every worker pid this module started


@pytest.fixture(autouse=True)
def _bounded():
    faulthandler.dump_traceback_later(TEST_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp")
    return {
        "gpt2": make_gpt2(root),
        "llama": make_llama(root),  # 4 query heads over 2 kv heads: one kv head per rank
        # fewer kv heads than ranks (replicated), and a vocabulary the ranks do not divide (padded)
        "qwen2": make_qwen2(root, num_key_value_heads=1, vocab_size=127),
        "bert": make_masked_lm("bert", root / "bert"),
    }


def tp_engine(path, **config) -> Engine:
    engine = Engine(path, tensor_parallel_size=TP, **config)
    SPAWNED.extend(engine.loaded.model.worker_pids)
    return engine


def alive(pid) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids, seconds=20.0) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(alive(p) for p in pids)


def greedy(engine, prompts=PROMPTS, max_tokens=10):
    got, _ = run_requests(engine, [(p, max_tokens) for p in prompts])
    return [got[i] for i in range(len(prompts))]


@torch.inference_mode()
def logits_of(model, prompts, mode):
    """One packed pass over `prompts` (no cache): logits of every row."""
    ids = torch.tensor([t for p in prompts for t in p], dtype=torch.int32)
    positions = torch.tensor([i for p in prompts for i in range(len(p))], dtype=torch.int32)
    cu = torch.tensor([0] + [len(p) for p in prompts], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return model.compute_logits(model(ids, positions, AttentionMetadata(mode, cu)))


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def check_shards(tp1, tp2, max_share):
    """Each rank holds at most `max_share` of the model's weight bytes (1/TP plus what every
    rank keeps whole: norms, biases after a sum, position embeddings, replicated kv heads)."""
    full = weight_bytes(tp1.loaded.model)
    ranks = tp2.loaded.model.memory_per_rank()
    assert len(ranks) == TP
    for rank in ranks:
        assert full / TP <= rank["weight_bytes"] <= max_share * full, (rank, full)
    return ranks


# ---- configuration ---------------------------------------------------------------------

def test_bad_sizes_are_refused_before_any_process_starts(checkpoints, tmp_path):
    path = checkpoints["llama"]
    for size, error in ((0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError)):
        with pytest.raises(error, match="tensor_parallel_size"):
            Engine(path, tensor_parallel_size=size)
    with pytest.raises(ValueError, match="tensor_parallel_size 3 must divide the 4 attention heads"):
        Engine(path, tensor_parallel_size=3)
    config = json.loads(open(os.path.join(path, "config.json")).read())
    config.update(num_attention_heads=12, num_key_value_heads=3, head_dim=16, hidden_size=192)
    (tmp_path / "config.json").write_text(json.dumps(config))  # no weights: refused before reading any
    with pytest.raises(ValueError, match="tensor_parallel_size 4 exceeds the 3 key/value heads"):
        Engine(str(tmp_path), tensor_parallel_size=4)
    with pytest.raises(ValueError, match=r"tensor_parallel_size 2 needs CUDA devices 0\.\.1, but there are 1"):
        check_tensor_parallel_size(2, "cuda", 1)
    with pytest.raises(ValueError, match=r"CUDA devices 1\.\.2, but there are 2"):
        check_tensor_parallel_size(2, "cuda:1", 2)
    assert check_tensor_parallel_size(2, "cpu", 0) == 2
    assert multiprocessing.active_children() == []


# ---- sharded loading (no processes) ---------------------------------------------------

def _halves(tensor, dim=0):
    return tensor.chunk(TP, dim)


def test_each_rank_loads_its_slice(checkpoints):
    """Shards loaded for ranks 0 and 1 (no process group is needed to load) against the whole
    model: q/k/v split by heads with the one kv head copied, gate/up split part by part,
    row-parallel columns, and 127 vocabulary rows split 64 + 63 with one zero row of padding."""
    path = checkpoints["qwen2"]
    whole = load_model(path).model
    layer = whole.layers[0]
    q, k, v = layer.self_attn.qkv_proj.weight.split((64, 16, 16))
    qb, kb, vb = layer.self_attn.qkv_proj.bias.split((64, 16, 16))
    gate, up = layer.mlp.gate_up_proj.weight.chunk(2)
    for rank in range(TP):
        shard = load_model(path, tp=TensorParallel(rank, TP)).model
        own = shard.layers[0]
        torch.testing.assert_close(own.self_attn.qkv_proj.weight, torch.cat([_halves(q)[rank], k, v]), rtol=0, atol=0)
        torch.testing.assert_close(own.self_attn.qkv_proj.bias, torch.cat([_halves(qb)[rank], kb, vb]), rtol=0, atol=0)
        torch.testing.assert_close(own.self_attn.o_proj.weight, _halves(layer.self_attn.o_proj.weight, 1)[rank],
                                   rtol=0, atol=0)
        torch.testing.assert_close(own.mlp.gate_up_proj.weight, torch.cat([_halves(gate)[rank], _halves(up)[rank]]),
                                   rtol=0, atol=0)
        torch.testing.assert_close(own.mlp.down_proj.weight, _halves(layer.mlp.down_proj.weight, 1)[rank],
                                   rtol=0, atol=0)
        torch.testing.assert_close(own.input_layernorm.weight, layer.input_layernorm.weight, rtol=0, atol=0)
        for name in ("embed_tokens", "lm_head"):
            rows = getattr(whole, name).weight[64 * rank: 64 * (rank + 1)]
            padded = torch.cat([rows, rows.new_zeros(64 - len(rows), rows.shape[1])])
            torch.testing.assert_close(getattr(shard, name).weight, padded, rtol=0, atol=0)


def test_gpt2_conv1d_fused_attention_is_split_by_heads(checkpoints):
    path = checkpoints["gpt2"]
    attn = load_model(path).model.blocks[1].attn
    q, k, v = attn.qkv_proj.weight.chunk(3)
    for rank in range(TP):
        own = load_model(path, tp=TensorParallel(rank, TP)).model.blocks[1].attn
        assert own.num_heads == 2
        expected = torch.cat([_halves(q)[rank], _halves(k)[rank], _halves(v)[rank]])
        torch.testing.assert_close(own.qkv_proj.weight, expected, rtol=0, atol=0)
        torch.testing.assert_close(own.o_proj.weight, _halves(attn.o_proj.weight, 1)[rank], rtol=0, atol=0)
        torch.testing.assert_close(own.o_proj.bias, attn.o_proj.bias, rtol=0, atol=0)


# ---- equal outputs ---------------------------------------------------------------------

def test_gpt2_matches_tp1_with_preemption_and_prefix_hits(checkpoints):
    path = checkpoints["gpt2"]
    tp1, tp2 = Engine(path, **STRESS_ENGINE), tp_engine(path, **STRESS_ENGINE)
    chunked = PROMPTS + [list(range(4, 64))]  # 60 tokens: a first chunk of 48 in which nothing samples
    assert greedy(tp2, chunked) == greedy(tp1, chunked)
    torch.testing.assert_close(logits_of(tp2.loaded.model, PROMPTS, "prefill"),
                               logits_of(tp1.loaded.model, PROMPTS, "prefill"), atol=1e-5, rtol=1e-5)
    requests = stress_requests()
    (got, cached), (want, _) = run_requests(tp2, requests), run_requests(tp1, requests)
    assert got == want and len(got) == len(requests)
    stats = tp2.stats()
    assert stats["num_preemptions"] > 0 and cached > 0
    assert stats["num_free_kv_blocks"] == stats["num_kv_blocks"] == STRESS_ENGINE["num_kv_blocks"]
    for rank in check_shards(tp1, tp2, max_share=0.55):
        assert rank["kv_blocks"] == STRESS_ENGINE["num_kv_blocks"]
    pids = tp2.loaded.model.worker_pids
    tp2.close()
    assert wait_gone(pids, seconds=0.1)


def test_llama_gqa_cache_grows_with_ranks_and_gc_ends_workers(checkpoints):
    """A budget-sized cache: each rank holds half the kv heads, so twice the blocks."""
    path = checkpoints["llama"]
    config = dict(block_size=4, cpu_kv_cache_bytes=64 * 1024)
    tp1, tp2 = Engine(path, **config), tp_engine(path, **config)
    assert tp2.loaded.model.num_kv_heads == 1 and tp1.loaded.model.num_kv_heads == 2
    blocks = tp1.stats()["num_kv_blocks"]
    assert tp2.stats()["num_kv_blocks"] == TP * blocks
    layers, kv_bytes_per_block = 2, 2 * 4 * 1 * 16 * 4  # (k, v) x block_size x kv heads x head_dim x fp32
    for rank in check_shards(tp1, tp2, max_share=0.51):
        assert rank["kv_blocks"] == TP * blocks
        assert rank["kv_cache_bytes"] == TP * blocks * layers * kv_bytes_per_block
    assert greedy(tp2) == greedy(tp1)
    torch.testing.assert_close(logits_of(tp2.loaded.model, PROMPTS, "prefill"),
                               logits_of(tp1.loaded.model, PROMPTS, "prefill"), atol=1e-5, rtol=1e-5)
    pids = tp2.loaded.model.worker_pids
    del tp2
    gc.collect()
    assert wait_gone(pids, seconds=0.1)


def test_qwen2_with_fewer_kv_heads_than_ranks_in_a_context_manager(checkpoints):
    path = checkpoints["qwen2"]
    tp1 = Engine(path, block_size=4, num_kv_blocks=64)
    with LLM(path, block_size=4, num_kv_blocks=64, tensor_parallel_size=TP) as llm:
        tp2 = llm.engine
        SPAWNED.extend(pids := tp2.loaded.model.worker_pids)
        assert tp2.loaded.model.num_kv_heads == 1  # each rank a copy of the one kv head
        check_shards(tp1, tp2, max_share=0.55)
        assert greedy(tp2) == greedy(tp1)
        torch.testing.assert_close(logits_of(tp2.loaded.model, PROMPTS, "prefill"),
                                   logits_of(tp1.loaded.model, PROMPTS, "prefill"), atol=1e-5, rtol=1e-5)
    assert wait_gone(pids, seconds=0.1)


def test_bert_mask_predict_matches_tp1(checkpoints):
    path = checkpoints["bert"]
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13]]
    params = [MaskPredictParams(length=6, iterations=3), MaskPredictParams(length=4, iterations=4, remask="commit")]
    want = LLM(path).generate(prompts, params)
    with LLM(path, tensor_parallel_size=TP) as llm:
        SPAWNED.extend(llm.engine.loaded.model.worker_pids)
        check_shards(LLM(path).engine, llm.engine, max_share=0.6)
        got = llm.generate(prompts, params)
        assert [o.token_ids for o in got] == [o.token_ids for o in want]
        torch.testing.assert_close(logits_of(llm.engine.loaded.model, prompts, "encoder"),
                                   logits_of(LLM(path).engine.loaded.model, prompts, "encoder"),
                                   atol=1e-5, rtol=1e-5)


# ---- failures and lifecycle --------------------------------------------------------------

@pytest.mark.parametrize("how", ["killed", "raised"])
def test_a_worker_failure_is_a_clear_error(checkpoints, how):
    engine = tp_engine(checkpoints["gpt2"], block_size=4, num_kv_blocks=32)
    for p in PROMPTS:
        engine.add_request(p)
    engine.step()
    model = engine.loaded.model
    (pid,) = model.worker_pids
    if how == "killed":
        os.kill(pid, signal.SIGKILL)
        expected = rf"tensor-parallel worker rank 1 \(pid {pid}\) was killed by SIGKILL"
    else:  # an operation the worker does not know: it raises, reports and exits
        model.workers.send(messages.header(99))
        expected = rf"rank 1 \(pid {pid}\) exited with status 1: RuntimeError: unknown tensor-parallel operation 99"
    start = time.monotonic()
    outputs = engine.step()
    assert time.monotonic() - start < 30
    assert len(outputs) == len(PROMPTS)
    for out in outputs:
        assert out.finish_reason == "error"
        assert out.error and re.search(expected, out.error), out.error
    engine.add_request([1, 2, 3])
    (out,) = engine.step()  # the engine stays broken, with the same message
    assert out.finish_reason == "error" and re.search(expected, out.error)
    engine.close()
    assert wait_gone([pid], seconds=0.1)


def test_workers_exit_when_the_parent_dies(checkpoints):
    run = subprocess.run([sys.executable, "tests/tp_script.py", "orphan", checkpoints["gpt2"]], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=240)
    assert run.returncode == -signal.SIGKILL, run.stderr
    pids = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(pids) == TP - 1
    assert wait_gone(pids, seconds=10)


def test_under_torchrun(checkpoints):
    path = checkpoints["gpt2"]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={TP}",
         "tests/tp_script.py", "torchrun", path],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    want = [o.token_ids for o in LLM(path, block_size=4, num_kv_blocks=32).generate(SCRIPT_PROMPTS, SCRIPT_PARAMS)]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == want


def test_benchmark_times_both_sizes(tmp_path):
    tp_benchmark.main(["--shapes", "tiny", "--batch-sizes", "2", "--rounds", "1", "--decode-steps", "2",
                          "--prompt-len", "5", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "tensor_parallel.json").read_text())
    assert [(r["tensor_parallel_size"], r["threads"]) for r in report["rows"]] == [(1, 1), (TP, 1), (1, TP)]
    for r in report["rows"]:
        assert r["decode"]["median_ms"] > 0 and r["prefill"]["median_ms"] > 0
    assert report["rows"][0]["decode_vs_tp1"] == 1.0
    assert "| tiny | 2 | 2 | 1 |" in (tmp_path / "tensor_parallel.md").read_text()


def test_no_worker_process_is_left(checkpoints):
    if not SPAWNED:
        pytest.skip("no tensor-parallel engine of this module ran")
    gc.collect()
    assert wait_gone(SPAWNED, seconds=10)
    assert multiprocessing.active_children() == []


class _PolledWork:
    """A control operation as rank 0 polls it: each timed wait raises gloo's timeout until the
    operation has ended; `ends_after` polls it ends, with `error` if it failed."""

    def __init__(self, ends_after, error=None, completes_during_timeout=False):
        self.polls, self.ends_after, self.error = 0, ends_after, error
        self.completes_during_timeout = completes_during_timeout

    def is_completed(self):
        return self.polls >= self.ends_after

    def wait(self, timeout=None):
        if timeout is not None:
            self.polls += 1
            if self.polls < self.ends_after or self.completes_during_timeout:
                raise RuntimeError("Operation timed out!")
        if self.error is not None:
            raise RuntimeError(self.error)
        return True


@pytest.mark.parametrize("work, raises", [
    (_PolledWork(ends_after=3), None),
    (_PolledWork(ends_after=1, completes_during_timeout=True), None),  # ended just after the poll gave up
    (_PolledWork(ends_after=2, error="peer gone", completes_during_timeout=True), "peer gone"),
])
def test_rank0_poll_tells_a_late_success_from_a_failure(work, raises):
    from engine.distributed.group import WorkerGroup

    group = type("Group", (), {"_check_workers": lambda self: None})()
    if raises is None:
        WorkerGroup.wait(group, work)
    else:
        with pytest.raises(RuntimeError, match=raises):
            WorkerGroup.wait(group, work)
