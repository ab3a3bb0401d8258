"""Command line: `python -m engine generate --model DIR --prompt "..."`.

A causal LM streams its tokens as they are produced; a masked LM prints its text after every
refinement pass, which shows mask-predict at work.
"""
import argparse
import sys

from engine.params import REMASK_MODES, SCHEDULES, MaskPredictParams, SamplingParams

SHARED_FLAGS = ("temperature", "top_k", "top_p", "seed")
CAUSAL_FLAGS = ("max_tokens", "min_tokens", "stop", "stop_token_ids", "ignore_eos")
MASKED_FLAGS = ("length", "iterations", "remask", "schedule", "threshold", "block_size", "stop_early")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="duodecode text generation")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser(
        "generate", help="generate text from a prompt",
        description="Generate a continuation of --prompt with a local Hugging Face checkpoint: a "
                    "causal LM decodes autoregressively and streams tokens; a masked LM runs "
                    "mask-predict and prints the text after every pass.",
    )
    gen.add_argument("--model", required=True, metavar="DIR", help="checkpoint folder (config.json, weights, tokenizer)")
    gen.add_argument("--prompt", required=True, help="the prompt text, tokenized with the checkpoint's tokenizer")

    sampling = gen.add_argument_group("sampling (both kinds)")
    sampling.add_argument("--temperature", type=float, help="0 = greedy (default: 1.0 causal, 0.0 mask-predict)")
    sampling.add_argument("--top-k", type=int, help="keep the k most likely tokens; 0 = off")
    sampling.add_argument("--top-p", type=float, help="nucleus sampling mass in (0, 1]; 1.0 = off")
    sampling.add_argument("--seed", type=int, help="seed of this request's draws (reproducible)")

    causal = gen.add_argument_group("causal LMs")
    causal.add_argument("--max-tokens", type=int, help="most tokens to generate (default 16)")
    causal.add_argument("--min-tokens", type=int, help="no end-of-sequence or stop token before this many")
    causal.add_argument("--stop", action="append", help="stop when this text appears (repeatable); it is cut from the output")
    causal.add_argument("--stop-token-id", dest="stop_token_ids", type=int, action="append",
                        help="stop after this token id (repeatable)")
    causal.add_argument("--ignore-eos", action="store_true", default=None,
                        help="keep generating past the end-of-sequence token")

    masked = gen.add_argument_group("masked LMs (mask-predict)")
    masked.add_argument("--length", type=int, help="number of target slots N (default 16)")
    masked.add_argument("--iterations", type=int, help="refinement passes T (default 10)")
    masked.add_argument("--remask", choices=REMASK_MODES, help="which slots go back to [MASK] after a pass")
    masked.add_argument("--schedule", choices=SCHEDULES, help="how many slots stay masked after each pass")
    masked.add_argument("--threshold", type=float, help="fill every slot with confidence >= this (Fast-dLLM)")
    masked.add_argument("--block-size", type=int, help="semi-autoregressive blocks of this many slots")
    masked.add_argument("--stop-early", action="store_true", default=None, help="stop when a pass changes nothing")

    eng = gen.add_argument_group("engine")
    eng.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    eng.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                     help="weights and KV cache dtype (auto: float32 on CPU, the checkpoint's on GPU)")
    eng.add_argument("--kernel-backend", choices=("triton", "torch"),
                     help="Triton kernels or their torch references (default: triton on CUDA, torch on CPU)")
    eng.add_argument("--kv-block-size", type=int, default=16, help="tokens per KV cache block")
    eng.add_argument("--num-kv-blocks", type=int, help="KV cache size in blocks (default: from the memory budget)")
    eng.add_argument("--max-num-batched-tokens", type=int, default=4096,
                     help="tokens per step; longer prompts are prefilled in chunks")
    eng.add_argument("--no-prefix-caching", action="store_true", help="do not reuse cached prompt blocks")
    eng.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    eng.add_argument("--allow-pickle", action="store_true", help="allow loading pytorch_model.bin (pickle) weights")
    eng.add_argument("--stats", action="store_true", help="print token counts and timings to stderr at the end")
    return parser


def _given(args, names):
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _params(args, kind, parser):
    other = MASKED_FLAGS if kind == "causal" else CAUSAL_FLAGS
    misplaced = _given(args, other)
    if misplaced:
        flag = "--" + next(iter(misplaced)).replace("_", "-")
        parser.error(f"{flag} does not apply: {args.model} is a {kind} LM")
    if kind == "causal":
        return SamplingParams(**_given(args, SHARED_FLAGS + CAUSAL_FLAGS))
    return MaskPredictParams(**_given(args, SHARED_FLAGS + MASKED_FLAGS))


def _print_stats(out):
    m = out.metrics
    parts = [f"prompt tokens {m.prompt_tokens}", f"cached {m.cached_prompt_tokens}",
             f"generated {m.generated_tokens or len(out.token_ids)}", f"finish {out.finish_reason}"]
    if m.nfe:
        parts.append(f"passes {m.nfe}")
    for name in ("ttft", "tpot", "e2e"):
        value = getattr(m, name)
        if value is not None:
            parts.append(f"{name} {value * 1000:.1f} ms")
    print(", ".join(parts), file=sys.stderr)


def generate(args, parser):
    from engine.engine import Engine

    config = dict(dtype=args.dtype, block_size=args.kv_block_size, max_num_batched_tokens=args.max_num_batched_tokens,
                  num_kv_blocks=args.num_kv_blocks, enable_prefix_caching=not args.no_prefix_caching,
                  enforce_eager=args.enforce_eager, allow_pickle=args.allow_pickle)
    config.update(_given(args, ("device", "kernel_backend")))
    engine = Engine(args.model, **config)
    engine.add_request(args.prompt, _params(args, engine.kind, parser))
    shown, out = "", None
    while engine.has_unfinished():
        for out in engine.step():
            if engine.kind == "masked":
                print(f"[pass {out.metrics.nfe}] {out.text}", flush=True)
            else:
                print(out.text[len(shown):], end="", flush=True)
                shown = out.text
    if engine.kind == "causal":
        print(flush=True)
    if args.stats and out is not None:
        _print_stats(out)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        generate(args, parser)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
