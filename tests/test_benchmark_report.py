"""`python -m benchmarks --quick` end to end on the bundled models: the report's structure and
the consistency of its numbers (intervals contain their values, counts add up, engine and HF
produce the same tokens, ratios follow from the times, paths are repository-relative)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    judge = REPO / "benchmarks" / "assets" / "ar-gpt2"
    subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--profile", "--judge", str(judge),
                    "--out", str(out)], check=True, timeout=900, cwd=REPO)
    return out, json.loads((out / "results.json").read_text()), (out / "report.md").read_text()


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_report_has_all_parts_and_plots(report):
    out, results, text = report
    for heading in ("## What the numbers say", "## 1. Quality as distributions",
                    "## 2. Throughput, engine against HF, and latency", "## 3. The roofline",
                    "## 4. Quality against throughput", "## 5. Profiling"):
        assert heading in text
    for name in ("quality", "lengths", "frontier", "throughput", "roofline", "pareto"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert f"({name}.png)" in text
    phases = {"ar": {"schedule", "prepare_inputs", "forward", "sample"},
              "mp": {"schedule", "forward", "predict", "remask"}}
    for mode, trace in results["profile"].items():
        names = {e.get("name") for e in json.loads((out / trace).read_text())["traceEvents"]}
        assert phases[mode] <= names


def test_paths_are_shown_relative_to_the_repository(report):
    _, results, text = report
    assert results["meta"]["ar_model"] == "benchmarks/assets/ar-gpt2"
    assert results["meta"]["mlm_models"] == {"cmlm": "benchmarks/assets/cmlm-bert", "mlm": "benchmarks/assets/mlm-bert"}
    assert str(REPO) not in text


def test_quality_rows_are_distributions_with_intervals(report):
    _, results, _ = report
    q, sizes = results["quality"], results["meta"]["sizes"]
    for r in q["rows"]:
        v = r["validity"]
        assert v["n"] == sizes["quality_prompts"] and v["lo"] <= v["value"] <= v["hi"]
        assert sum(s["n"] for s in r["validity_by_length"].values()) == v["n"]
        assert 0 <= r["length_tv"] <= 1 and abs(sum(r["length_histogram"]) - 1) < 1e-9
        assert _finite(r["judge_perplexity"]) and r["judge_perplexity"] >= 1
    sampled = [r for r in q["pooled"] if r["temperature"] == 1.0]
    assert sampled and all(r["seeds"] == sizes["sampling_seeds"] for r in sampled)
    for r in sampled:
        assert r["validity"]["n"] == sizes["sampling_seeds"] * sizes["quality_prompts"]
        assert sum(s["n"] for s in r["validity_by_length"].values()) == r["validity"]["n"]  # strata pooled too
    configs = {r["config"] for r in q["pooled"] if r["model"] == "cmlm-bert"}
    assert {"T=1", "T=N", "L2R greedy", "T=N oracle frame"} <= configs


def test_throughput_counts_ratios_and_parity(report):
    _, results, _ = report
    for r in results["throughput"]:
        assert r["same_as_hf"] is True  # greedy: the engine and HF decode the same tokens
        assert r["speedup"] == pytest.approx(r["hf_seconds"]["median"] / r["seconds"]["median"])
        assert r["speedup_paired"]["min"] <= r["speedup_paired"]["max"]
        assert r["tokens_per_s"] == pytest.approx(r["generated_tokens"] / r["seconds"]["median"])
        assert 0 <= r["valid_outputs"] <= r["batch"] and r["valid_words"] <= r["words"]
        if results["meta"]["device"] == "cpu":  # where each side's time goes: inside the model calls and not
            for side in (r["split"]["engine"], r["split"]["hf"]):
                assert side["model"] > 0 and side["rest"] >= 0
        if r["mode"] == "ar":
            assert r["generated_tokens"] == sum(r["generated"])
        else:
            assert r["generated_tokens"] == sum(r["frames"])
    rates = {}
    for r in results["latency"]:
        rates.setdefault(r["load"], set()).add(r["rate"])
        assert r["requests"] == results["meta"]["sizes"]["latency_requests"]
        assert r["ttft"]["p50"] <= r["e2e"]["p99"]
    assert all(len(v) == 1 for v in rates.values())  # both modes at the same arrival rate


def test_roofline_and_conclusions_come_from_the_run(report):
    _, results, text = report
    roof = results["roofline"]
    assert roof["bandwidth_gbps"] > 0 and all(v > 0 for v in roof["matmul_tflops"].values())
    for p in roof["points"]:
        assert p["fraction_of_bound"] > 0 and p["predicted_seconds"] > p["bound_seconds"]
    greedy = next(r for r in results["quality"]["pooled"] if r["config"] == "AR greedy")
    assert f"{greedy['validity']['value']:.1%} [{greedy['validity']['lo']:.1%}" in text
