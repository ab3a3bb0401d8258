"""Step time with tensor parallelism against one process, on the same machine in one run.

    python -m benchmarks.tensor_parallel [--sizes 1 2] [--shapes tiny medium] [--batch-sizes 1 8]

Builds randomly initialised Llama-shaped checkpoints (GQA), loads each once per
configuration, and times engine steps through `Engine.step()`: the prefill step of `batch`
prompts, then every decode step. The configurations are timed in alternating rounds, so a
slow spell of a shared machine hits them alike. Reported: the median step time with its
10th-90th percentile spread, and each configuration's ratio to the one-process baseline.

Baselines: tensor_parallel_size 1 with one thread, and with as many threads as the
tensor-parallel run has processes (the same cores); every tensor-parallel rank runs one
thread. On CPU the ranks talk over gloo (loopback TCP), whose latency per collective is what
tensor parallelism must win back; on a GPU machine the same script times NCCL, when it has
the GPUs (one H200 cannot run tensor_parallel_size 2).
"""
import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from engine import Engine, SamplingParams

from .machine import machine_name, results_folder, write_report

SHAPES = {
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    "medium": dict(vocab_size=8192, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                   num_attention_heads=16, num_key_value_heads=4),
}


def save_checkpoint(shape, folder) -> str:
    config = LlamaConfig(max_position_embeddings=1024, tie_word_embeddings=False, **SHAPES[shape])
    path = Path(folder) / shape
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


def time_steps(engine, batch, prompt_len, decode_steps, rng) -> tuple[float, list[float]]:
    """(seconds of the prefill step, seconds of each decode step) of `batch` fresh requests."""
    params = SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=decode_steps + 1)
    vocab = engine.loaded.vocab_size
    for _ in range(batch):
        engine.add_request(torch.randint(0, vocab, (prompt_len,), generator=rng).tolist(), params)
    times = []
    while engine.has_unfinished():
        start = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - start)
    return times[0], times[1:]


def summary(seconds) -> dict:
    ordered = sorted(seconds)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"median_ms": 1e3 * statistics.median(ordered), "p10_ms": 1e3 * pick(0.1), "p90_ms": 1e3 * pick(0.9)}


def run(shape, path, sizes, batch_sizes, prompt_len, decode_steps, rounds):
    """Rows of one checkpoint: every configuration at every batch size."""
    parallel = max(sizes)
    configs = [(size, 1) for size in sizes] + [(1, parallel)]  # (tensor_parallel_size, threads of rank 0)
    engines = {c: Engine(path, tensor_parallel_size=c[0], block_size=16) for c in configs}
    rows = []
    try:
        for batch in batch_sizes:
            prefill, decode = {c: [] for c in configs}, {c: [] for c in configs}
            rng = torch.Generator().manual_seed(0)
            for _ in range(rounds):
                for config, engine in engines.items():
                    torch.set_num_threads(config[1])
                    first, rest = time_steps(engine, batch, prompt_len, decode_steps, rng)
                    prefill[config].append(first)
                    decode[config] += rest
            base = statistics.median(decode[(1, 1)])
            for config in configs:
                row = {"shape": shape, "batch": batch, "tensor_parallel_size": config[0], "threads": config[1],
                       "decode": summary(decode[config]), "prefill": summary(prefill[config])}
                row["decode_vs_tp1"] = statistics.median(decode[config]) / base
                rows.append(row)
                print(f"  {shape} batch {batch} tp {config[0]} threads {config[1]}: decode step "
                      f"{row['decode']['median_ms']:.2f} ms ({row['decode_vs_tp1']:.2f}x tp1), prefill "
                      f"{row['prefill']['median_ms']:.1f} ms", flush=True)
    finally:
        for engine in engines.values():
            engine.close()
        torch.set_num_threads(1)
    return rows


def markdown(report) -> str:
    lines = [f"# Tensor parallelism: step time, {report['date']}, {report['machine']}", "",
             f"Llama-shaped random checkpoints, fp32, prompt {report['prompt_len']} tokens, {report['decode_steps']} "
             f"decode steps per round, {report['rounds']} alternating rounds. `threads` is the intra-op threads "
             "of rank 0 (each tensor-parallel rank runs one). Medians with the 10th-90th percentile spread; "
             "`vs tp1` is the decode median over that of tensor_parallel_size 1 with one thread.", "",
             "| shape | batch | tp | threads | decode step ms (p10-p90) | vs tp1 | prefill step ms (p10-p90) |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        d, p = r["decode"], r["prefill"]
        lines.append(f"| {r['shape']} | {r['batch']} | {r['tensor_parallel_size']} | {r['threads']} | "
                     f"{d['median_ms']:.2f} ({d['p10_ms']:.2f}-{d['p90_ms']:.2f}) | {r['decode_vs_tp1']:.2f}x | "
                     f"{p['median_ms']:.1f} ({p['p10_ms']:.1f}-{p['p90_ms']:.1f}) |")
    lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tensor_parallel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 2], help="tensor_parallel_size values (default 1 2)")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES), help="checkpoint shapes")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8], help="sequences per step")
    parser.add_argument("--prompt-len", type=int, default=64, help="prompt tokens per sequence")
    parser.add_argument("--decode-steps", type=int, default=16, help="decode steps timed per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per batch size")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for tensor_parallel.json/.md (default: benchmarks/results/<date>-<machine>)")
    args = parser.parse_args(argv)
    if 1 not in args.sizes:
        parser.error("--sizes must include 1, the baseline")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpus = torch.cuda.device_count()
    runnable = device == "cpu" or max(args.sizes) <= gpus
    if not runnable:
        note = (f"This machine has {gpus} GPU(s): tensor_parallel_size {max(args.sizes)} cannot run here, so "
                "multi-GPU step time is unmeasured.")
    elif device == "cpu":
        note = (f"On CPU every collective is a gloo round trip over loopback TCP, and the ranks share the "
                f"machine's {os.cpu_count()} cores with whatever else runs there (load average "
                f"{os.getloadavg()[0]:.1f} when this run started).")
    else:
        note = "Measured over NCCL, one GPU per rank."
    print(note)
    out = results_folder(args.out, device)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for shape in args.shapes if runnable else []:
            path = save_checkpoint(shape, folder)
            rows += run(shape, path, sorted(args.sizes), args.batch_sizes, args.prompt_len, args.decode_steps,
                        args.rounds)
    report = {"date": str(datetime.date.today()), "machine": machine_name(device), "prompt_len": args.prompt_len,
              "decode_steps": args.decode_steps, "rounds": args.rounds, "rows": rows, "note": note}
    write_report(out, "tensor_parallel", report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
