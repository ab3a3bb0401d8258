"""`python -m engine generate` on tiny checkpoints: once in a subprocess as a user runs it,
the rest through `engine.__main__.main` in-process (a Python start costs seconds here)."""
import os
import subprocess
import sys

import pytest

from engine import LLM, SamplingParams
from engine.__main__ import main
from tests.tiny_causal import make_gpt2
from tests.tiny_masked import make_masked_lm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return make_gpt2(tmp_path_factory.mktemp("ckpt"))


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    stdout = capsys.readouterr().out
    for flag in ("--model", "--prompt", "--max-tokens", "--min-tokens", "--temperature", "--top-k", "--top-p",
                 "--seed", "--stop", "--stop-token-id", "--ignore-eos", "--dtype", "--device", "--kernel-backend",
                 "--kv-block-size", "--num-kv-blocks", "--max-num-batched-tokens", "--no-prefix-caching",
                 "--enforce-eager", "--allow-pickle", "--length", "--iterations", "--remask", "--schedule",
                 "--threshold", "--block-size", "--stop-early", "--stats"):
        assert flag in stdout, flag


def test_generate_streams_the_greedy_continuation(gpt2):
    expected = LLM(gpt2, num_kv_blocks=16).generate(
        "the cat", SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True))[0].text
    result = run_cli("generate", "--model", gpt2, "--prompt", "the cat", "--max-tokens", "6",
                     "--temperature", "0", "--ignore-eos", "--num-kv-blocks", "16", "--stats")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"
    assert "generated 6" in result.stderr and "finish length" in result.stderr


def test_mask_predict_prints_every_pass(tmp_path, capsys):
    path = make_masked_lm("bert", str(tmp_path / "bert"))
    assert main(["generate", "--model", path, "--prompt", "the cat", "--length", "4", "--iterations", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("]")[0] for line in lines] == ["[pass 1", "[pass 2", "[pass 3"]


def test_errors_are_reported_not_raised(gpt2, tmp_path, capsys):
    assert main(["generate", "--model", gpt2, "--prompt", "the cat", "--top-p", "3"]) == 1
    assert "top_p must be in (0, 1]" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", gpt2, "--prompt", "the cat", "--length", "4"])
    assert exit_info.value.code == 2 and "--length does not apply" in capsys.readouterr().err
