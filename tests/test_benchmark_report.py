"""`python -m benchmarks --quick` end to end on the bundled models: the report's structure
and the consistency of its numbers (finite, tokens counted = tokens generated, ratios
consistent with the times)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    judge = Path(__file__).resolve().parents[1] / "benchmarks" / "assets" / "ar-gpt2"
    subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--profile", "--judge", str(judge),
                    "--out", str(out)], check=True, timeout=900)
    return out, json.loads((out / "results.json").read_text()), (out / "report.md").read_text()


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_report_has_all_five_parts_and_plots(report):
    out, results, text = report
    for heading in ("## What the numbers say", "## 1. Quality against passes",
                    "## 2. Throughput and latency against batch size", "## 3. The roofline",
                    "## 4. Quality against throughput", "## 5. Profiling"):
        assert heading in text
    for name in ("quality", "throughput", "roofline", "pareto"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert f"({name}.png)" in text
    phases = {"ar": {"schedule", "prepare_inputs", "forward", "sample"},
              "mp": {"schedule", "forward", "predict", "remask"}}
    for mode, trace in results["profile"].items():
        names = {e.get("name") for e in json.loads((out / trace).read_text())["traceEvents"]}
        assert phases[mode] <= names


def test_quality_rows_are_consistent(report):
    _, results, _ = report
    rows = results["quality"]
    assert {r["mode"] for r in rows} == {"ar", "mp"}
    for r in rows:
        assert 0 <= r["validity"] <= 1 and 0 <= r["repeat_rate"] <= 1
        assert _finite(r["judge_perplexity"]) and r["judge_perplexity"] >= 1
        assert r["generated_tokens"] > 0 and _finite(r["seconds"]) and r["seconds"] > 0
        assert r["tokens_per_s"] == pytest.approx(r["generated_tokens"] / r["seconds"])
        assert r["words_per_s"] == pytest.approx(r["words"] / r["seconds"])
        if r["mode"] == "mp":
            # every prompt gets `length` slots; passes never exceed the iterations asked
            assert r["generated_tokens"] == r["prompts"] * results["meta"]["sizes"]["new_tokens"]
            assert 1 <= r["mean_nfe"] <= r["iterations"]


def test_throughput_counts_and_ratios(report):
    _, results, _ = report
    sizes = results["meta"]["sizes"]
    for r in results["throughput"]:
        expected = r["batch"] * sizes["new_tokens"]
        assert r["generated_tokens"] == expected == r["hf_generated_tokens"]
        assert r["tokens_per_s"] == pytest.approx(expected / r["seconds"])
        assert r["speedup"] == pytest.approx(r["hf_seconds"] / r["seconds"])
    for r in results["latency"]:
        assert r["requests"] == sizes["latency_requests"]
        assert r["ttft"]["p50"] <= r["ttft"]["p99"] <= r["e2e"]["p99"]


def test_roofline_and_conclusions_come_from_the_run(report):
    _, results, text = report
    roof = results["roofline"]
    assert all(_finite(v) and v > 0 for k, v in roof["ceilings"].items() if k.endswith(("gbps", "tflops")))
    for p in roof["predicted"]:
        assert all(_finite(v) and v > 0 for v in p.values())
    # the conclusions quote the measured numbers of this run
    greedy = next(r for r in results["quality"] if r["config"] == "greedy")
    assert f"{greedy['validity']:.0%}" in text
    assert f"{roof['ceilings']['matmul_tflops']:.2f} TFLOP/s" in text
