"""AR throughput at real model sizes: the engine against HF `generate()` and the roofline.

    python -m benchmarks.scale_check [--models gpt2-124m llama-1.5b] [--batch-sizes 1 64]

The bundled models are tiny, so on a GPU their numbers measure overheads. This check builds
randomly initialised checkpoints of real shapes (GPT-2 124M; a Qwen2-1.5B-shaped Llama with
GQA), saves them with `save_pretrained` and loads them through the engine's loader like any
checkpoint, then times greedy decoding of equal-length random prompts (no EOS stop) by the
engine and by HF `generate()`, alternately, and puts the engine next to the roofline bound
of the same work (ceilings measured in the same run). `--models tiny` runs the same path on
a toy shape (CPU, CI).
"""
import argparse
import datetime
import sys
import tempfile
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from engine import LLM

from . import hf_baselines, roofline, throughput
from .ceilings import measure_ceilings
from .machine import machine_name, results_folder, write_report

SHAPES = {
    "gpt2-124m": (GPT2LMHeadModel, lambda: GPT2Config()),
    "llama-1.5b": (LlamaForCausalLM, lambda: LlamaConfig(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True)),
    "tiny": (LlamaForCausalLM, lambda: LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512)),
}


def save_random_checkpoint(name, folder, device, dtype):
    """A randomly initialised checkpoint of shape `name`, saved as safetensors; returns its path."""
    model_cls, make_config = SHAPES[name]
    config = make_config()
    with torch.device(device):  # initialise where it is fast
        model = model_cls(config).to(dtype)
    path = Path(folder) / name
    model.save_pretrained(path)
    del model
    return str(path)


def check_model(name, folder, device, dtype, batch_sizes, prompt_len, new_tokens, reps, ceilings,
                async_scheduling=None):
    path = save_random_checkpoint(name, folder, device, dtype)
    llm = LLM(path, device=device, dtype=str(dtype).replace("torch.", ""), async_scheduling=async_scheduling)
    hf = hf_baselines.load_hf(path, "causal", device, dtype)
    shape = roofline.ModelShape.from_hf_config(hf.config, torch.tensor([], dtype=dtype).element_size())
    vocab = hf.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch in batch_sizes:
        prompts = torch.randint(0, vocab, (batch, prompt_len), generator=gen).tolist()
        row = throughput.ar_fixed_point(llm, hf, prompts, new_tokens, device, reps)
        bound = roofline.ar_tokens_per_second(shape, ceilings, batch, prompt_len, new_tokens)
        row.update(model=name, params=shape.matmul_params + shape.vocab * shape.hidden,
                   roofline_tokens_per_s=bound, roofline_pct=100 * row["tokens_per_s"] / bound)
        rows.append(row)
        print(f"  {name} batch {batch}: engine {row['tokens_per_s']:.0f} tok/s, HF {row['hf_tokens_per_s']:.0f} "
              f"({row['speedup']:.2f}x), {row['roofline_pct']:.0f}% of roofline", flush=True)
    del llm, hf
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


def markdown(report):
    lines = [f"# AR at real model sizes, {report['date']}, {report['machine']}", "",
             f"dtype {report['dtype']}, prompt {report['prompt_len']} tokens, {report['new_tokens']} new tokens, "
             f"random weights. Roofline ceilings measured in this run: {report['ceilings']['copy_gbps']:.0f} GB/s copy, "
             f"{report['ceilings']['read_gbps']:.0f} GB/s read, {report['ceilings']['matmul_tflops']:.1f} TFLOP/s matmul.",
             "", "| model | params | batch | engine tok/s | HF tok/s | engine / HF | roofline tok/s | % of roofline |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['batch']} | {r['tokens_per_s']:.0f} | "
                     f"{r['hf_tokens_per_s']:.0f} | {r['speedup']:.2f}x | {r['roofline_tokens_per_s']:.0f} | "
                     f"{r['roofline_pct']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gpt2-124m", "llama-1.5b"], choices=list(SHAPES),
                        help="model shapes to build and time (default: gpt2-124m llama-1.5b)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16, 64, 256], help="batch sizes")
    parser.add_argument("--prompt-len", type=int, default=128, help="prompt tokens per sequence")
    parser.add_argument("--new-tokens", type=int, default=128, help="generated tokens per sequence")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per point (medians reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                        help="model dtype (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                        help="the engine's async scheduling (default: the engine's, on for CUDA); run once with "
                             "--no-async-scheduling to see what it gives")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for scale.json and scale.md (default: benchmarks/results/<date>-<machine>)")
    args = parser.parse_args(argv)

    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    out = results_folder(args.out, args.device)
    ceil = measure_ceilings(args.device, dtype, quick=not args.device.startswith("cuda"))
    ceilings = roofline.Ceilings(bandwidth=max(ceil["copy_gbps"], ceil["read_gbps"]) * 1e9,
                                 flops=ceil["matmul_tflops"] * 1e12)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            rows += check_model(name, folder, args.device, dtype, args.batch_sizes, args.prompt_len,
                                args.new_tokens, args.reps, ceilings, args.async_scheduling)
    report = {"date": str(datetime.date.today()), "machine": machine_name(args.device),
              "dtype": str(dtype).replace("torch.", ""), "prompt_len": args.prompt_len,
              "new_tokens": args.new_tokens, "async_scheduling": args.async_scheduling, "ceilings": ceil, "rows": rows}
    write_report(out, "scale", report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
