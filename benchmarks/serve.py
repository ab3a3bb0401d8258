"""python -m benchmarks.serve: load an OpenAI-compatible server the way users do, and time it.

Requests arrive as a Poisson process (or at a fixed rate, or all at once) under an optional
cap on requests in flight; each is a streamed /v1/completions call whose prompt is random
token ids (special tokens excluded) and whose prompt and output lengths are drawn uniformly
from the given ranges. A causal LM generates exactly its output length (ignore_eos); for a
masked LM the output length is its number of slots, refined in --iterations passes.

Reported, as vLLM's serving benchmark does: request throughput, output (and total) tokens
per second, and mean / median / p90 / p99 of TTFT (send to the first text), TPOT ((end -
first text) / (output tokens - 1)), ITL (gaps between streamed chunks; a masked LM's are the
gaps between passes) and end-to-end latency. With --model the benchmark starts the server
itself, and then also replays the same arrivals through the Engine in this process (no HTTP),
so the report gives the server's throughput as a ratio of the engine's, measured in the same
run.
"""
import argparse
import asyncio
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx

from benchmarks.server_process import ServerProcess

PERCENTILES = (50, 90, 99)
WARM_UP_REQUESTS = 4  # sent (and replayed) before the clock starts


@dataclass
class Workload:
    """One benchmark's requests: prompts (token ids), output lengths and send offsets (s)."""

    prompts: list[list[int]]
    output_lens: list[int]
    offsets: list[float]


@dataclass
class RequestResult:
    ok: bool
    output_tokens: int = 0
    ttft: float | None = None
    e2e: float | None = None
    itl: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def tpot(self) -> float | None:
        if not self.ok or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


def uniform_lengths(rng, n, mean, spread) -> list[int]:
    low, high = max(1, round(mean * (1 - spread))), max(1, round(mean * (1 + spread)))
    return [rng.randint(low, high) for _ in range(n)]


def arrival_offsets(rng, n, rate, arrivals) -> list[float]:
    """Send times after the start: all at 0 for an infinite rate, else Poisson or fixed gaps."""
    if math.isinf(rate):
        return [0.0] * n
    gaps = [rng.expovariate(rate) if arrivals == "poisson" else 1.0 / rate for _ in range(n)]
    return [sum(gaps[:i]) for i in range(n)]


def make_workload(tokenizer, args) -> Workload:
    rng = random.Random(args.seed)
    special = set(tokenizer.all_special_ids)
    vocabulary = [i for i in range(len(tokenizer)) if i not in special]
    prompt_lens = uniform_lengths(rng, args.num_prompts, args.input_len, args.input_len_range)
    prompts = [[rng.choice(vocabulary) for _ in range(n)] for n in prompt_lens]
    output_lens = uniform_lengths(rng, args.num_prompts, args.output_len, args.output_len_range)
    return Workload(prompts, output_lens, arrival_offsets(rng, args.num_prompts, args.request_rate, args.arrivals))


def request_body(model, kind, prompt, output_len, iterations) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": output_len, "stream": True,
            "stream_options": {"include_usage": True}}
    if kind == "causal":
        body.update(temperature=0.0, ignore_eos=True)
    else:
        body["iterations"] = iterations
    return body


async def send(client, body) -> RequestResult:
    """One streamed completion, timed chunk by chunk."""
    start = last = time.perf_counter()
    result = RequestResult(ok=False)
    try:
        async with client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                result.error = (await response.aread()).decode()[:500]
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                payload = json.loads(line[len("data: "):])
                if "error" in payload:
                    result.error = payload["error"]["message"]
                    return result
                if payload.get("usage"):
                    result.output_tokens = payload["usage"]["completion_tokens"]
                if any(c.get("text") for c in payload["choices"]):
                    now = time.perf_counter()
                    if result.ttft is None:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
    except httpx.HTTPError as e:
        result.error = f"{type(e).__name__}: {e}"
        return result
    result.e2e = time.perf_counter() - start
    if result.ttft is None:  # a completed stream without text (a masked LM that filled its slots with eos)
        result.ttft = result.e2e
    result.ok = True
    return result


async def run_clients(url, model, kind, workload, args) -> tuple[list[RequestResult], float]:
    limit = asyncio.Semaphore(args.max_concurrency or len(workload.prompts))
    timeout = httpx.Timeout(args.request_timeout)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        start = time.perf_counter()

        async def one(i):
            await asyncio.sleep(max(0.0, start + workload.offsets[i] - time.perf_counter()))
            async with limit:
                body = request_body(model, kind, workload.prompts[i], workload.output_lens[i], args.iterations)
                return await send(client, body)

        results = await asyncio.gather(*(one(i) for i in range(len(workload.prompts))))
        return results, time.perf_counter() - start


def replay_in_process(engine, workload, args) -> dict:
    """The same arrivals through Engine.step() in this process: the server's ceiling."""
    from engine import MaskPredictParams, SamplingParams

    def params(n):
        if engine.kind == "causal":
            return SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=n)
        return MaskPredictParams(length=n, iterations=args.iterations)

    cap = args.max_concurrency or len(workload.prompts)
    pending = list(range(len(workload.prompts)))
    outputs, in_flight = [], 0
    start = time.perf_counter()
    while pending or engine.has_unfinished():
        now = time.perf_counter()
        while pending and in_flight < cap and start + workload.offsets[pending[0]] <= now:
            i = pending.pop(0)
            engine.add_request(workload.prompts[i], params(workload.output_lens[i]))
            in_flight += 1
        if not engine.has_unfinished():
            time.sleep(max(0.0, start + workload.offsets[pending[0]] - time.perf_counter()))
            continue
        for out in engine.step():
            if out.finished:
                outputs.append(out)
                in_flight -= 1
    seconds = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for o in outputs)
    return {"duration_s": seconds, "output_tokens": tokens, "output_tokens_per_s": tokens / seconds,
            "request_throughput": len(outputs) / seconds,
            "ttft_ms": summary([o.metrics.ttft for o in outputs]),
            "e2e_ms": summary([o.metrics.e2e for o in outputs])}


def summary(seconds) -> dict:
    """mean / median / percentiles in milliseconds (None when there is nothing to summarise)."""
    values = sorted(s * 1000 for s in seconds if s is not None)
    if not values:
        return {"mean": None, **{f"p{q}": None for q in PERCENTILES}}
    out = {"mean": statistics.fmean(values)}
    for q in PERCENTILES:
        out[f"p{q}"] = values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]
    return out


def report(results, duration, workload) -> dict:
    done = [r for r in results if r.ok]
    output_tokens = sum(r.output_tokens for r in done)
    input_tokens = sum(len(p) for p, r in zip(workload.prompts, results) if r.ok)
    return {
        "completed": len(done),
        "failed": len(results) - len(done),
        "errors": sorted({r.error for r in results if not r.ok})[:5],
        "duration_s": duration,
        "request_throughput": len(done) / duration,
        "output_tokens": output_tokens,
        "output_tokens_per_s": output_tokens / duration,
        "total_tokens_per_s": (input_tokens + output_tokens) / duration,
        "ttft_ms": summary(r.ttft for r in done),
        "tpot_ms": summary(r.tpot for r in done),
        "itl_ms": summary(gap for r in done for gap in r.itl),
        "e2e_ms": summary(r.e2e for r in done),
    }


def print_report(result: dict, file=sys.stdout) -> None:
    s = result["server"]
    print(f"model {result['model']} ({result['kind']}), {result['config']['num_prompts']} requests, "
          f"rate {result['config']['request_rate']} req/s ({result['config']['arrivals']}), "
          f"max concurrency {result['config']['max_concurrency'] or 'none'}", file=file)
    print(f"completed {s['completed']}, failed {s['failed']} in {s['duration_s']:.2f} s: "
          f"{s['request_throughput']:.2f} req/s, {s['output_tokens_per_s']:.1f} output tok/s, "
          f"{s['total_tokens_per_s']:.1f} total tok/s", file=file)
    print(f"{'ms':>6} {'mean':>9} {'median':>9} {'p90':>9} {'p99':>9}", file=file)
    for name in ("ttft", "tpot", "itl", "e2e"):
        row = s[f"{name}_ms"]
        cells = " ".join(f"{row[k]:9.1f}" if row[k] is not None else f"{'-':>9}" for k in ("mean", "p50", "p90", "p99"))
        print(f"{name.upper():>6} {cells}", file=file)
    if "engine_in_process" in result:
        e = result["engine_in_process"]
        print(f"engine in-process (same arrivals, no HTTP): {e['output_tokens_per_s']:.1f} output tok/s; "
              f"server / engine = {result['server_over_engine']:.2f}", file=file)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8000")
    target.add_argument("--model", help="checkpoint folder: start `python -m engine serve` on it for the run")
    p.add_argument("--served-model-name", help="the model name to send (default: the one /v1/models lists)")
    p.add_argument("--tokenizer", help="tokenizer folder for the random prompts (default: the served model's folder)")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra flag for the started server, e.g. --server-arg=--max-num-seqs=64 (repeatable)")
    p.add_argument("--num-prompts", type=int, default=200, help="requests to send (default: 200)")
    p.add_argument("--request-rate", type=float, default=math.inf,
                   help="mean requests per second (default: inf, all sent at once)")
    p.add_argument("--arrivals", choices=("poisson", "constant"), default="poisson",
                   help="gaps between requests: exponential (Poisson process) or all equal (default: poisson)")
    p.add_argument("--max-concurrency", type=int, default=None, help="most requests in flight at once (default: no cap)")
    p.add_argument("--input-len", type=int, default=16, help="mean prompt length in tokens (default: 16)")
    p.add_argument("--input-len-range", type=float, default=0.5,
                   help="prompt lengths are uniform in input-len * [1 - r, 1 + r] (default: 0.5)")
    p.add_argument("--output-len", type=int, default=24, help="mean output length in tokens (default: 24)")
    p.add_argument("--output-len-range", type=float, default=0.5,
                   help="output lengths are uniform in output-len * [1 - r, 1 + r] (default: 0.5)")
    p.add_argument("--iterations", type=int, default=10, help="mask-predict passes for a masked LM (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts, lengths and arrivals (default: 0)")
    p.add_argument("--request-timeout", type=float, default=600.0, help="seconds before a request fails (default: 600)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="with --model, torch intra-op threads of the started server and of the in-process engine "
                        "(default: 1; on a small shared CPU more threads mostly wait on each other)")
    p.add_argument("--no-baseline", action="store_true",
                   help="with --model, skip replaying the workload through the Engine in this process")
    p.add_argument("--out", help="write the results as JSON to this file")
    args = p.parse_args(argv)
    for name in ("num_prompts", "input_len", "output_len", "iterations", "torch_threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.request_rate <= 0:
        p.error("--request-rate must be > 0 (inf sends everything at once)")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        p.error("--max-concurrency must be >= 1")
    for name in ("input_len_range", "output_len_range"):
        if not 0 <= getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be in [0, 1)")
    return args


def served_model(url) -> dict:
    """The first model /v1/models lists (this project's server adds its kind and folder)."""
    (card, *_) = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    return card


def benchmark(url, args) -> tuple[dict, Workload]:
    from transformers import AutoTokenizer

    card = served_model(url)
    model = args.served_model_name or card["id"]
    kind = card.get("kind", "causal")
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or card.get("root") or model)
    workload = make_workload(tokenizer, args)
    warm_up = Workload(workload.prompts[:WARM_UP_REQUESTS], workload.output_lens[:WARM_UP_REQUESTS],
                       [0.0] * WARM_UP_REQUESTS)
    asyncio.run(run_clients(url, model, kind, warm_up, args))
    results, duration = asyncio.run(run_clients(url, model, kind, workload, args))
    config = {k: v for k, v in vars(args).items() if k != "server_arg"}
    config["request_rate"] = str(args.request_rate) if math.isinf(args.request_rate) else args.request_rate  # JSON has no inf
    return {"model": model, "kind": kind, "config": config, "server": report(results, duration, workload)}, workload


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.url:
        result, _ = benchmark(args.url.rstrip("/"), args)
    else:
        with tempfile.TemporaryDirectory() as logs:
            env = dict(os.environ, OMP_NUM_THREADS=str(args.torch_threads))
            with ServerProcess(args.model, args.server_arg, os.path.join(logs, "server.log"), env) as server:
                result, workload = benchmark(server.url, args)
            result["server_stopped"] = server.is_gone()
        if not args.no_baseline:
            result.update(baseline(args, workload, result["server"]))
    print_report(result)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if result["server"]["failed"] == 0 else 1


def baseline(args, workload, served) -> dict:
    """The same workload through an Engine with the server's options, in this process."""
    import torch

    from engine import Engine
    from engine.__main__ import build_parser, engine_config

    torch.set_num_threads(args.torch_threads)
    server_args = build_parser().parse_args(["serve", "--model", args.model, *args.server_arg])
    engine = Engine(engine_config(server_args))
    n = WARM_UP_REQUESTS
    replay_in_process(engine, Workload(workload.prompts[:n], workload.output_lens[:n], [0.0] * n), args)
    in_process = replay_in_process(engine, workload, args)
    return {"engine_in_process": in_process,
            "server_over_engine": served["output_tokens_per_s"] / in_process["output_tokens_per_s"]}


if __name__ == "__main__":
    sys.exit(main())
