"""python -m benchmarks.serve: arrivals, lengths, and one small run that starts its own server."""
import json
import math
import random
import statistics

import pytest

from benchmarks import serve as bench
from tests.tiny_causal import make_gpt2


def test_arrival_offsets():
    rng = random.Random(0)
    assert bench.arrival_offsets(rng, 3, math.inf, "poisson") == [0.0, 0.0, 0.0]
    assert bench.arrival_offsets(rng, 4, 2.0, "constant") == [0.0, 0.5, 1.0, 1.5]
    offsets = bench.arrival_offsets(rng, 4000, 20.0, "poisson")
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert statistics.fmean(gaps) == pytest.approx(1 / 20, rel=0.05)
    assert statistics.pstdev(gaps) == pytest.approx(1 / 20, rel=0.1)  # exponential: sd = mean


def test_lengths_are_uniform_in_the_range():
    lengths = bench.uniform_lengths(random.Random(0), 2000, 20, 0.5)
    assert min(lengths) == 10 and max(lengths) == 30


def test_bad_arguments_are_rejected(capsys):
    for argv, flag in ((["--num-prompts", "0"], "--num-prompts"), (["--request-rate", "0"], "--request-rate"),
                       (["--input-len-range", "1.5"], "--input-len-range")):
        with pytest.raises(SystemExit):
            bench.parse_args(["--url", "http://127.0.0.1:1", *argv])
        assert flag in capsys.readouterr().err


def test_a_run_against_its_own_server(tmp_path):
    model = make_gpt2(tmp_path)
    out = tmp_path / "result.json"
    argv = ["--model", model, "--num-prompts", "6", "--request-rate", "40", "--max-concurrency", "4",
            "--input-len", "4", "--output-len", "5", "--output-len-range", "0.4",
            "--server-arg=--num-kv-blocks=32", "--out", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    served = result["server"]
    assert served["completed"] == 6 and served["failed"] == 0
    assert 6 * 3 <= served["output_tokens"] <= 6 * 7  # every request generated its drawn length
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        row = served[name]
        assert 0 < row["p50"] <= row["p90"] <= row["p99"], name
    assert result["kind"] == "causal" and result["server_stopped"]
    assert result["engine_in_process"]["output_tokens"] == served["output_tokens"]
    assert result["server_over_engine"] > 0
