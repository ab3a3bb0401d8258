"""Command line: `python -m engine generate --model DIR --prompt "..."`, and `python -m engine
serve --model DIR` (the OpenAI-compatible server, engine/server/).

A causal LM streams its tokens as they are produced; a masked LM prints its text after every
refinement pass, which shows mask-predict at work.

Each subcommand is a pair of functions: `add_<name>_command(commands, common)` declares its
flags (shared groups such as the engine options come from `add_engine_arguments`) and sets
`run`, the handler `run_<name>(args) -> exit status`. `main` parses, dispatches and reports
every error the same way for all subcommands, as one line on stderr, `error: ...`:
  2    a usage error: an unknown or malformed flag, a value out of range, a flag that does
       not apply to the checkpoint's kind (found before any weights are loaded);
  1    a runtime error: a checkpoint that cannot be loaded, a prompt the engine refuses, a
       request that fails while generating;
  130  interrupted (Ctrl-C).
`--debug` shows the Python traceback instead of the one-line message. A reader that stops
early (`... | head -c 10`) ends the command quietly with status 0.
"""
import argparse
import os
import re
import sys
import warnings
from dataclasses import fields

from engine.config import DTYPE_NAMES, EngineConfig
from engine.params import REMASK_MODES, SCHEDULES, MaskPredictParams, SamplingParams
from engine.server.cli import add_serve_command

SHARED_FLAGS = ("temperature", "top_k", "top_p", "seed")
CAUSAL_FLAGS = ("max_tokens", "min_tokens", "stop", "stop_token_ids", "ignore_eos")
MASKED_FLAGS = ("length", "iterations", "remask", "schedule", "threshold", "block_length", "stop_early")
ENGINE_OPTIONS = ("device", "dtype", "kernel_backend", "block_size", "num_kv_blocks", "max_num_seqs",
                  "max_num_batched_tokens", "gpu_memory_utilization", "enable_prefix_caching", "enforce_eager",
                  "allow_pickle", "enable_nvtx", "tensor_parallel_size", "async_scheduling")
# field -> its flag's dest where the two names differ (the flag is the dest with dashes)
ENGINE_FLAGS = {"block_size": "kv_block_size"}
# speculative_config key -> its flag's dest (its errors name the key, which is the flag but for these)
SPECULATIVE_FLAGS = {"model": "speculative_model", "num_speculative_tokens": "num_speculative_tokens",
                     "draft_passes": "draft_passes", "draft_length": "draft_length",
                     "adaptive": "adaptive_speculation"}
PARAMS_FLAGS = {"stop_token_ids": "stop_token_id"}


class UsageError(Exception):
    """A bad command line (exit status 2)."""


class CommandError(Exception):
    """A runtime failure whose message is meant for the user as it is (exit status 1)."""


def _flag(field, renames) -> str:
    return "--" + renames.get(field, field).replace("_", "-")


def _usage(error: Exception, renames: dict) -> UsageError:
    """A params or config error as a usage error, its leading field name given as the flag."""
    field, _, rest = str(error).partition(" ")
    if not re.fullmatch(r"[a-z_]+", field):
        return UsageError(str(error))
    return UsageError(f"{_flag(field, renames)} {rest}")


class _DeprecatedFlag(argparse.Action):
    """A flag kept for one release under an old name: stores into the new flag's dest and
    notes the rename in args.deprecated, which `request_params` reports as a warning once
    the command line is known to be valid."""

    def __init__(self, option_strings, dest, new_flag, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.deprecated = [*getattr(namespace, "deprecated", []), f"{option_string} is deprecated, use {self.new_flag}"]


class _Parser(argparse.ArgumentParser):
    """Reports a parse error as UsageError, for main's one-line message, instead of exiting."""

    def error(self, message):
        raise UsageError(message)


def _engine_default(name):
    return next(f.default for f in fields(EngineConfig) if f.name == name)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--model and the EngineConfig flags, for every subcommand that loads a model."""
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="checkpoint folder (config.json, weights, tokenizer)")
    eng = parser.add_argument_group("engine")
    eng.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    eng.add_argument("--dtype", choices=DTYPE_NAMES,
                     help="weights and KV cache dtype (default auto: float32 on CPU, the checkpoint's on GPU)")
    eng.add_argument("--kernel-backend", choices=("triton", "torch"),
                     help="Triton kernels or their torch references (default: triton on CUDA, torch on CPU)")
    eng.add_argument("--kv-block-size", type=int,
                     help=f"tokens per KV cache block (default {_engine_default('block_size')})")
    eng.add_argument("--num-kv-blocks", type=int, help="KV cache size in blocks (default: from the memory budget)")
    eng.add_argument("--max-num-seqs", type=int,
                     help=f"most sequences in one step (default {_engine_default('max_num_seqs')})")
    eng.add_argument("--max-num-batched-tokens", type=int,
                     help="most tokens computed in one step; longer prompts are prefilled in chunks "
                          f"(default {_engine_default('max_num_batched_tokens')})")
    eng.add_argument("--gpu-memory-utilization", type=float,
                     help="share of the free GPU memory the KV cache may take, in (0, 1] "
                          f"(default {_engine_default('gpu_memory_utilization')})")
    eng.add_argument("--no-prefix-caching", dest="enable_prefix_caching", action="store_false", default=None,
                     help="do not reuse cached prompt blocks")
    eng.add_argument("--enforce-eager", action="store_true", default=None, help="no CUDA graphs")
    eng.add_argument("--allow-pickle", action="store_true", default=None,
                     help="allow loading pytorch_model.bin (pickle) weights, read as tensors only")
    eng.add_argument("--enable-nvtx", action="store_true", default=None,
                     help="mark the engine's phases as NVTX ranges for Nsight Systems (nsys profile)")
    eng.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                     help="schedule the next autoregressive step while the device runs this one "
                          "(default: on for CUDA without speculative decoding or tensor parallelism)")
    eng.add_argument("--tensor-parallel-size", type=int, metavar="N",
                     help="split the model over N processes (one GPU each on CUDA, gloo on CPU); "
                          "N must divide the attention heads (default 1)")
    spec = parser.add_argument_group("speculative decoding (causal LMs)")
    spec.add_argument("--speculative-model", metavar="DIR",
                      help="draft checkpoint sharing the model's tokenizer: a masked LM (drafts in parallel "
                           "passes) or a smaller causal LM; the output stays exactly the model's")
    spec.add_argument("--num-speculative-tokens", type=int, help="draft tokens verified per step, >= 1 (needed with "
                                                                 "--speculative-model)")
    spec.add_argument("--draft-passes", type=int, help="masked draft: encoder passes per draft, in [1, k] (default 1)")
    spec.add_argument("--draft-length", type=int, help="masked draft: [MASK] slots it fills, >= k (default k)")
    spec.add_argument("--adaptive-speculation", action="store_true", default=None,
                      help="choose the number of draft tokens (0 included) every step from the measured "
                           "acceptance and cost")


def speculative_config(args) -> dict | None:
    """The speculative_config the --speculative-model group describes (None without it)."""
    given = {key: getattr(args, dest) for key, dest in SPECULATIVE_FLAGS.items() if getattr(args, dest) is not None}
    if not given:
        return None
    if "model" not in given or "num_speculative_tokens" not in given:
        raise UsageError("--speculative-model and --num-speculative-tokens go together")
    return given


def engine_config(args) -> EngineConfig:
    """The EngineConfig the flags describe; a bad value is a usage error."""
    given = {name: getattr(args, ENGINE_FLAGS.get(name, name)) for name in ENGINE_OPTIONS}
    given["speculative_config"] = speculative_config(args)
    try:
        return EngineConfig(model=args.model, **{n: v for n, v in given.items() if v is not None})
    except (TypeError, ValueError) as e:
        raise _usage(e, ENGINE_FLAGS) from e


# ---- generate --------------------------------------------------------------------------

def add_generate_command(commands, common) -> None:
    gen = commands.add_parser(
        "generate", parents=[common], help="generate text from a prompt",
        description="Generate a continuation of --prompt with a local Hugging Face checkpoint: a "
                    "causal LM decodes autoregressively and streams tokens; a masked LM runs "
                    "mask-predict and prints the text after every pass.",
    )
    gen.set_defaults(run=run_generate)
    add_engine_arguments(gen)
    gen.add_argument("--prompt", required=True, help="the prompt text, tokenized with the checkpoint's tokenizer")
    gen.add_argument("--stats", action="store_true", help="print token counts and timings to stderr at the end")

    sampling = gen.add_argument_group("sampling (both kinds)")
    sampling.add_argument("--temperature", type=float,
                          help="0 = greedy; values below 1e-6 are greedy too (default: 1.0 causal, 0.0 mask-predict)")
    sampling.add_argument("--top-k", type=int, help="keep the k most likely tokens; 0 or -1 = off")
    sampling.add_argument("--top-p", type=float, help="nucleus sampling mass in (0, 1]; 1.0 = off")
    sampling.add_argument("--seed", type=int, help="seed of this request's draws (any int, taken mod 2^64)")

    causal = gen.add_argument_group("causal LMs")
    causal.add_argument("--max-tokens", type=int, help="most tokens to generate, >= 1 (default 16)")
    causal.add_argument("--min-tokens", type=int, help="no end-of-sequence or stop token before this many")
    causal.add_argument("--stop", action="append",
                        help="stop when this text appears (repeatable); it is cut from the output; needs a tokenizer")
    causal.add_argument("--stop-token-id", dest="stop_token_ids", type=int, action="append",
                        help="stop after this token id (repeatable)")
    causal.add_argument("--ignore-eos", action="store_true", default=None,
                        help="keep generating past the end-of-sequence token")

    masked = gen.add_argument_group("masked LMs (mask-predict)")
    masked.add_argument("--length", type=int, help="number of target slots N (default 16)")
    masked.add_argument("--iterations", type=int, help="refinement passes T (default 10)")
    masked.add_argument("--remask", choices=REMASK_MODES, help="which slots go back to [MASK] after a pass")
    masked.add_argument("--schedule", choices=SCHEDULES, help="how many slots stay masked after each pass")
    masked.add_argument("--threshold", type=float, help="fill every slot with confidence >= this, in (0, 1] (Fast-dLLM)")
    masked.add_argument("--block-length", type=int,
                        help="semi-autoregressive blocks of this many slots, decoded left to right")
    masked.add_argument("--block-size", dest="block_length", type=int, action=_DeprecatedFlag,
                        new_flag="--block-length", help="deprecated alias of --block-length")
    masked.add_argument("--stop-early", action="store_true", default=None, help="stop when a pass changes nothing")


def _given(args, names):
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def request_params(args, kind):
    """The request's params from the flags, for a checkpoint of `kind`; misuse is a usage error."""
    other = MASKED_FLAGS if kind == "causal" else CAUSAL_FLAGS
    misplaced = _given(args, other)
    if misplaced:
        flag = _flag(next(iter(misplaced)), PARAMS_FLAGS)
        raise UsageError(f"{flag} does not apply: {args.model} is a {kind} LM")
    try:
        if kind == "causal":
            params = SamplingParams(**_given(args, SHARED_FLAGS + CAUSAL_FLAGS))
        else:
            params = MaskPredictParams(**_given(args, SHARED_FLAGS + MASKED_FLAGS))
    except (TypeError, ValueError) as e:
        raise _usage(e, PARAMS_FLAGS) from e
    for message in getattr(args, "deprecated", []):
        warnings.warn(message, FutureWarning)  # shown to the user as one "warning: ..." line
    return params


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


def run_generate(args) -> int:
    from engine.engine import Engine
    from engine.models.loader import read_architecture

    if not args.prompt:
        raise UsageError("--prompt is empty")
    config = engine_config(args)
    _, kind = read_architecture(args.model)
    params = request_params(args, kind)  # flags are checked before the weights load
    engine = Engine(config)
    try:
        out = _stream(engine, args.prompt, params)
    finally:
        engine.close()  # ends tensor-parallel workers
    if engine.kind == "causal":
        print(flush=True)
    if args.stats and out is not None:
        _print_stats(out)
    return 0


def _stream(engine, prompt, params):
    """Print the request's progress as it comes; its last output."""
    engine.add_request(prompt, params)
    shown, out = "", None
    while engine.has_unfinished():
        for out in engine.step():
            if out.error:
                raise CommandError(f"the request failed: {out.error}")
            if engine.kind == "masked":
                print(f"[pass {out.metrics.nfe}] {out.text}", flush=True)
            else:
                print(out.text[len(shown):], end="", flush=True)
                shown = out.text
    return out


# ---- the command line ------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="on an error, show the Python traceback instead of a one-line message")
    parser = _Parser(prog="python -m engine", description="duodecode text generation")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_generate_command(commands, common)
    add_serve_command(commands, common, add_engine_arguments, engine_config)
    return parser


def _one_line(message) -> str:
    return re.sub(r"\s*\n\s*", " ", str(message)).strip()


def _report(message, status) -> int:
    print(f"error: {_one_line(message)}", file=sys.stderr)
    return status


def _describe(error: Exception) -> str:
    if isinstance(error, (CommandError, ValueError, TypeError, OSError)) and str(error):
        return str(error)
    return f"{type(error).__name__}: {error} (run with --debug for the traceback)"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {_one_line(message)}", file=sys.stderr)


def _silence_stdout():
    """After the reader has gone, send what is left in stdout's buffer to /dev/null, so the
    interpreter's final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv=None) -> int:
    parser = build_parser()
    debug = False
    try:
        args = parser.parse_args(argv)
        debug = args.debug
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.run(args)
    except UsageError as e:
        return _report(e, 2)
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        return _report("interrupted", 130)
    except Exception as e:
        if debug:
            raise
        return _report(_describe(e), 1)


if __name__ == "__main__":
    sys.exit(main())
