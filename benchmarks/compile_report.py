"""Compile every kernel configuration the engine can launch for NVIDIA GPUs, on any machine.

    python -m benchmarks.compile_report [--arch 90 80] [--jobs N] [--models NAME ...] [--dtypes ...] [--out DIR]

Triton's interpreter (how CI runs the kernels) accepts programs that its GPU compiler
rejects, and says nothing about registers or shared memory. This report runs Triton's real
compiler, down to ptxas, for GPU targets without needing a GPU:

1. For each model shape of `benchmarks.kernel_cases.MODELS` and each dtype, it calls the
   public kernel functions with "meta" tensors (shapes, strides and dtypes, no data) at a
   decode step and a prefill step, the way that model family's layers call them. Triton's
   launch is intercepted, so what is recorded is exactly what each launcher chose: its
   tile sizes, warps and stages, and Triton's own specialization of the arguments
   (pointer alignment, strides of 1 or multiples of 16).
2. Each distinct configuration is compiled once per target (triton.compile + ASTSource +
   GPUTarget("cuda", arch, 32)); the ptxas log gives registers, spill stores/loads and the
   stack frame, the compiled metadata the shared memory.
3. It writes compile.json and compile.md (one table per target) to --out, and exits 1 if a
   configuration fails to compile, needs more shared memory than the target has, or spills
   registers on the decode path (the kernels a decode step runs: attention, KV store,
   rotary, norms, the fused norm + projection, activations, sampling).

The launchers must therefore decide everything from shapes, dtypes and `kernels._launch`
(never from tensor values), which is what keeps them free of host syncs anyway. Binding the
recorded arguments goes through Triton's own launch binder (`create_function_from_signature`,
`JITFunction._pack_args`: internal names, the same in triton 3.6 and 3.9).
"""
import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# The GPU compiler, not the interpreter: set before anything imports triton or `kernels`.
os.environ["TRITON_INTERPRET"] = "0"

import torch  # noqa: E402
import triton  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

import kernels  # noqa: E402
from kernels import _launch, norm_linear  # noqa: E402

from .kernel_cases import MODELS, ModelShape  # noqa: E402
from .machine import results_folder  # noqa: E402

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Largest dynamic shared memory per block (bytes) of each compute capability's GPUs.
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
DECODE_BATCHES = (1, 256)
MAX_MODEL_LEN = 4096  # block-table width of the decode steps, in tokens
BLOCK_SIZE = 16
EPS = 1e-5


@dataclasses.dataclass
class Launch:
    """One recorded kernel launch: the JIT function and the arguments the launcher passed."""

    kernel: JITFunction
    args: tuple
    kwargs: dict


@contextlib.contextmanager
def recorded_launches():
    """Within the block, Triton kernel launches are recorded instead of run."""
    launches = []

    def record(self, *args, grid, warmup, **kwargs):
        launches.append(Launch(self, args, kwargs))

    original = JITFunction.run
    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = original


def _meta(*shape, dtype):
    return torch.empty(shape, dtype=dtype, device="meta")


def _qkv(tokens, m: ModelShape, dtype):
    """q, k, v as the views of one fused projection, as the models split it."""
    q_size, kv_size = m.num_q_heads * m.head_dim, m.num_kv_heads * m.head_dim
    qkv = _meta(tokens, q_size + 2 * kv_size, dtype=dtype)
    q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
    return (q.view(tokens, m.num_q_heads, m.head_dim), k.view(tokens, m.num_kv_heads, m.head_dim),
            v.view(tokens, m.num_kv_heads, m.head_dim))


ENCODERS = ("bert", "eurobert")  # families whose every step is an encoder pass (mask-predict)


def _caches(m: ModelShape, dtype, num_blocks=1024):
    shape = (num_blocks, BLOCK_SIZE, m.num_kv_heads, m.head_dim)
    return _meta(*shape, dtype=dtype), _meta(*shape, dtype=dtype)


def _norm_linear_calls(m: ModelShape, dtype, tokens):
    """The Llama layer's two norm + projection launches over `tokens` rows: input norm + qkv
    (the first layer has no residual; the qkv bias goes to rotary_store_kv) and
    post-attention norm + gate/up (biased when a config sets mlp_bias)."""
    x = _meta(tokens, m.hidden, dtype=dtype)
    norm_weight = _meta(m.hidden, dtype=dtype)
    qkv = _meta((m.num_q_heads + 2 * m.num_kv_heads) * m.head_dim, m.hidden, dtype=dtype)
    gate_up = _meta(2 * m.intermediate, m.hidden, dtype=dtype)
    gate_up_bias = _meta(2 * m.intermediate, dtype=dtype)
    return [(kernels.rms_norm_linear, (x, norm_weight, EPS, qkv)),
            (kernels.rms_norm_linear, (x, norm_weight, EPS, qkv, None, x)),
            (kernels.rms_norm_linear, (x, norm_weight, EPS, gate_up, None, x)),
            (kernels.rms_norm_linear, (x, norm_weight, EPS, gate_up, gate_up_bias, x))]


def _layer_calls(m: ModelShape, dtype, tokens, num_seqs, decode):
    """The kernel calls of one layer step of `m` over `tokens` new tokens of `num_seqs` sequences."""
    int32 = torch.int32
    x = _meta(tokens, m.hidden, dtype=dtype)
    weight, bias = _meta(m.hidden, dtype=dtype), _meta(m.hidden, dtype=dtype)
    q, k, v = _qkv(tokens, m, dtype)
    cu = _meta(num_seqs + 1, dtype=int32)
    k_cache, v_cache = _caches(m, dtype)
    slots = _meta(tokens, dtype=int32)
    calls = []
    if m.family in ("llama", "eurobert"):
        calls += _norm_linear_calls(m, dtype, tokens)
        calls.append((kernels.rms_norm, (x, weight, EPS, x)))  # the model's final norm
        cos = sin = _meta(MAX_MODEL_LEN, m.head_dim // 2, dtype=torch.float32)
        positions = _meta(tokens, dtype=torch.int64)
        if m.family == "eurobert":  # rotation only: an encoder has no cache
            calls.append((kernels.rotary_store_kv, (q, k, v, positions, cos, sin, None, None, None, None)))
        else:
            calls.append((kernels.rotary_embedding, (q, k, positions, cos, sin)))
            qkv_bias = _meta((m.num_q_heads + 2 * m.num_kv_heads) * m.head_dim, dtype=dtype)
            for with_bias in (None, qkv_bias):  # Llama / Mistral, and Qwen2's biased q/k/v
                calls.append((kernels.rotary_store_kv,
                              (q, k, v, positions, cos, sin, k_cache, v_cache, slots, with_bias)))
        calls.append((kernels.silu_and_mul, (_meta(tokens, 2 * m.intermediate, dtype=dtype),)))
    else:
        calls += [(kernels.layer_norm, (x, weight, bias, EPS)), (kernels.layer_norm, (x, weight, bias, EPS, x))]
        approximate = "tanh" if m.family == "gpt2" else "none"
        calls.append((kernels.gelu, (_meta(tokens, m.intermediate, dtype=dtype), approximate)))
    scale = m.head_dim ** -0.5
    if m.family in ENCODERS:
        calls.append((kernels.prefill_attention, (q, k, v, cu, scale, False)))
        return calls
    calls.append((kernels.store_kv, (k, v, k_cache, v_cache, slots)))
    lens = _meta(num_seqs, dtype=int32)
    tables = _meta(num_seqs, MAX_MODEL_LEN // BLOCK_SIZE, dtype=int32)
    if decode:
        q_step = _meta(tokens, m.num_q_heads, m.head_dim, dtype=dtype)  # the rotary output
        calls.append((kernels.decode_attention, (q_step, k_cache, v_cache, tables, lens, scale)))
    else:
        calls.append((kernels.prefill_attention, (q, k, v, cu, scale, True)))
        calls.append((kernels.paged_prefill_attention, (q, k_cache, v_cache, tables, cu, lens, scale)))
    return calls


def _sampling_calls(m: ModelShape, batch):
    logits = _meta(batch, m.vocab, dtype=torch.float32)  # the models' LM heads return fp32
    params = (_meta(batch, dtype=torch.float32), _meta(batch, dtype=torch.int64),
              _meta(batch, dtype=torch.float32), _meta(batch, dtype=torch.int64))
    calls = [(kernels.sample, (logits, *params))]
    if m.family in ENCODERS:
        calls.append((kernels.confidence_argmax, (logits,)))
    return calls


def model_steps(m: ModelShape, dtype):
    """(path, calls) of the steps the engine runs for `m`: decode steps at a small and a large
    batch, a prefill of short sequences and one of long ones (the tile choice depends on the
    mean length). Encoders have no decode step: every mask-predict pass is a prefill."""
    steps = []
    if m.family not in ENCODERS:
        for batch in DECODE_BATCHES:
            steps.append(("decode", _layer_calls(m, dtype, batch, batch, decode=True) + _sampling_calls(m, batch)))
        if m.family == "llama":  # the fused norm + projection picks its tiles by batch: every bucket
            steps += [("decode", _norm_linear_calls(m, dtype, rows)) for rows in norm_linear.ROW_BUCKETS]
    for tokens, num_seqs in ((512, 16), (4096, 2)):
        steps.append(("prefill", _layer_calls(m, dtype, tokens, num_seqs, decode=False)))
    if m.family in ENCODERS:
        steps.append(("prefill", _sampling_calls(m, 512)))
    return steps


@dataclasses.dataclass
class Config:
    """One distinct compilation: a kernel and its specialization, and who launches it."""

    kernel: JITFunction
    signature: dict
    constexprs: dict
    attrs: dict
    launch_options: dict  # num_warps, num_stages
    paths: set = dataclasses.field(default_factory=set)
    uses: set = dataclasses.field(default_factory=set)  # "model dtype"
    launched_by: set = dataclasses.field(default_factory=set)  # public kernel functions

    def describe(self):
        names = [p.name for p in self.kernel.params]
        shown = {names[path[0]]: value for path, value in self.constexprs.items()
                 if self.kernel.params[path[0]].is_constexpr}
        shown.update(self.launch_options)
        return " ".join(f"{k}={v}" for k, v in shown.items())


def _backend(arch):
    from triton.compiler import make_backend
    return make_backend(triton.backends.compiler.GPUTarget("cuda", arch, 32))


def collect_configs(models=MODELS, dtypes=DTYPES):
    """Every distinct kernel configuration the steps of `models` launch, keyed like Triton's cache."""
    from triton.runtime.jit import create_function_from_signature

    backend = _backend(90)  # specialization (alignment, ==1, %16) is the same for every NVIDIA target
    configs = {}
    for m in models:
        for dtype in dtypes:
            for path, calls in model_steps(m, dtype):
                for fn, args in calls:
                    with recorded_launches() as launches:
                        fn(*args)
                    for launch in launches:
                        kernel = launch.kernel
                        binder = create_function_from_signature(kernel.signature, kernel.params, backend)
                        bound, specialization, options = binder(*launch.args, **launch.kwargs)
                        _, signature, constexprs, attrs = kernel._pack_args(
                            backend, dict(launch.kwargs), bound, specialization, options)
                        key = (kernel.fn.__qualname__, str(specialization), str(sorted(options.items())))
                        config = configs.get(key)
                        if config is None:
                            config = configs[key] = Config(kernel, signature, constexprs, attrs, options)
                        config.paths.add(path)
                        config.uses.add(f"{m.name} {str(dtype).replace('torch.', '')}")
                        config.launched_by.add(fn.__name__)
    return list(configs.values())


_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")


def compile_config(config: Config, arch: int) -> dict:
    """Compile one configuration for sm_<arch>; registers, spills and shared memory, or the error."""
    from triton import knobs
    from triton.compiler import ASTSource

    backend = _backend(arch)
    options = backend.parse_options(dict(config.launch_options))
    knobs.compilation.always_compile = True  # a cache hit would skip ptxas and its log
    knobs.nvidia.dump_ptxas_log = True
    log = io.StringIO()
    start = time.perf_counter()
    row = {"arch": f"sm_{arch}", "kernel": config.kernel.fn.__name__.strip("_"), "config": config.describe()}
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(
                ASTSource(config.kernel, config.signature, config.constexprs, config.attrs),
                target=triton.backends.compiler.GPUTarget("cuda", arch, 32), options=options.__dict__,
            )
    except Exception as error:  # noqa: BLE001 - any compiler failure is a row of the report
        message = str(error).strip().splitlines()
        row.update(error=" ".join(message[:3])[:400] or type(error).__name__)
        return row
    text = log.getvalue()
    frame, regs = _PTXAS_FRAME.search(text), _PTXAS_REGS.search(text)
    if frame is None or regs is None:
        row.update(error="no ptxas report in the compiler's output")
        return row
    stack, spill_stores, spill_loads = (int(g) for g in frame.groups())
    shared = compiled.metadata.shared
    row.update(registers=int(regs.group(1)), spill_stores=spill_stores, spill_loads=spill_loads,
               stack=stack, shared=shared, fits_shared=shared <= SHARED_LIMIT.get(arch, SHARED_LIMIT[80]),
               seconds=round(time.perf_counter() - start, 2))
    return row


def _compile_indexed(job):
    index, arch = job
    return compile_config(_WORKER_CONFIGS[index], arch)


_WORKER_CONFIGS = []


def compile_all(configs, arches, jobs=1, progress=True):
    """Rows for every (configuration, arch), in a stable order."""
    from tqdm import tqdm

    _WORKER_CONFIGS[:] = configs
    work = [(i, arch) for arch in arches for i in range(len(configs))]
    bar = tqdm(total=len(work), desc="compiling", disable=not progress, file=sys.stderr)
    rows = []
    if jobs > 1:
        # Forked workers inherit the recorded configurations (kernels and meta-derived signatures).
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            for row in pool.map(_compile_indexed, work):
                rows.append(row)
                bar.update()
    else:
        for job in work:
            rows.append(_compile_indexed(job))
            bar.update()
    bar.close()
    for (i, _), row in zip(work, rows):
        row["paths"] = sorted(configs[i].paths)
        row["uses"] = sorted(configs[i].uses)
        row["launched_by"] = sorted(configs[i].launched_by)
        row["decode_path"] = "decode" in configs[i].paths
    return rows


def problems(rows):
    """What fails the report: compile errors, shared memory beyond the target, decode-path spills."""
    out = []
    for r in rows:
        where = f"{r['arch']} {r['kernel']} [{r['config']}]"
        if "error" in r:
            out.append(f"{where}: does not compile: {r['error']}")
        elif not r["fits_shared"]:
            out.append(f"{where}: needs {r['shared']} bytes of shared memory")
        elif r["decode_path"] and (r["spill_stores"] or r["spill_loads"]):
            out.append(f"{where}: spills {r['spill_stores']} B stored / {r['spill_loads']} B loaded on the decode path")
    return out


def _used_by(uses, limit=3):
    models = sorted({u.rsplit(" ", 1)[0] for u in uses})
    dtypes = sorted({u.rsplit(" ", 1)[1] for u in uses})
    shown = ", ".join(models[:limit]) + (f" +{len(models) - limit}" if len(models) > limit else "")
    return f"{shown} ({'/'.join(dtypes)})"


def _merged(rows):
    """Rows that read the same (configurations differing only in Triton's argument
    specialization, with the same registers, spills and shared memory) as one, uses joined."""
    merged = {}
    for r in rows:
        key = (r["kernel"], r["config"], r.get("error"), r.get("registers"), r.get("spill_stores"),
               r.get("spill_loads"), r.get("stack"), r.get("shared"), r["decode_path"])
        if key in merged:
            merged[key] = dict(merged[key], uses=sorted(set(merged[key]["uses"]) | set(r["uses"])))
        else:
            merged[key] = r
    return list(merged.values())


def markdown(report):
    lines = [f"# Compile report: triton {report['triton']}", "",
             f"{report['configs']} distinct configurations from {len(report['models'])} model shapes x "
             f"{len(report['dtypes'])} dtypes, compiled in {report['seconds']:.0f} s. Spills in bytes; shared "
             "memory in KiB; `decode` marks a configuration a decode step launches.", ""]
    for arch in report["arches"]:
        rows = _merged([r for r in report["rows"] if r["arch"] == f"sm_{arch}"])
        lines += [f"## sm_{arch}", "",
                  "| kernel | config | used by | path | regs | spill st/ld | stack | shared KiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            path = "decode" if r["decode_path"] else "prefill"
            if "error" in r:
                lines.append(f"| {r['kernel']} | {r['config']} | {_used_by(r['uses'])} | {path} | "
                             f"ERROR: {r['error'][:160]} | | | |")
                continue
            lines.append(
                f"| {r['kernel']} | {r['config']} | {_used_by(r['uses'])} | {path} | {r['registers']} | "
                f"{r['spill_stores']}/{r['spill_loads']} | {r['stack']} | {r['shared'] / 1024:.1f}"
                f"{'' if r['fits_shared'] else ' (too much)'} |")
        lines.append("")
    lines += ["## Problems", ""] + ([f"- {p}" for p in report["problems"]] or ["none"])
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", type=int, default=[90, 80],
                        help="compute capabilities to compile for (default: 90 80, Hopper and Ampere)")
    parser.add_argument("--jobs", type=int, default=1, help="compiler processes (default 1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for compile.json and compile.md (default: benchmarks/results/<date>-<machine>)")
    parser.add_argument("--models", nargs="+", default=None,
                        help="only the model shapes whose name contains one of these (default: all of "
                             "benchmarks.kernel_cases.MODELS)")
    parser.add_argument("--dtypes", nargs="+", default=[str(d).replace("torch.", "") for d in DTYPES],
                        choices=[str(d).replace("torch.", "") for d in DTYPES], help="dtypes (default: all three)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    models = [m for m in MODELS if args.models is None or any(part in m.name for part in args.models)]
    if not models:
        parser.error(f"--models {args.models} matches none of {[m.name for m in MODELS]}")
    dtypes = [getattr(torch, name) for name in args.dtypes]
    if _launch.INTERPRETED:
        raise SystemExit("kernels were imported in Triton's interpreter mode; run this module in its own process")

    start = time.perf_counter()
    configs = collect_configs(models, dtypes)
    rows = compile_all(configs, args.arch, args.jobs, progress=not args.no_progress)
    report = {"triton": triton.__version__, "torch": torch.__version__, "arches": args.arch,
              "models": [m.name for m in models], "dtypes": args.dtypes, "configs": len(configs), "seconds": time.perf_counter() - start, "rows": rows}
    report["problems"] = problems(rows)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = results_folder(args.out, device)
    (out / "compile.json").write_text(json.dumps(report, indent=2))
    (out / "compile.md").write_text(markdown(report))
    print(f"{len(configs)} configurations, {len(rows)} compilations, {len(report['problems'])} problems; "
          f"wrote {out / 'compile.json'} and {out / 'compile.md'}")
    for p in report["problems"]:
        print("PROBLEM:", p, file=sys.stderr)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
