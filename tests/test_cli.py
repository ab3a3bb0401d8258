"""`python -m engine generate` on tiny checkpoints: as a user runs it in a subprocess where
the process itself matters (exit status, stderr, a closed pipe), the rest through
`engine.__main__.main` in-process (a Python start costs seconds here)."""
import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest

from engine import LLM, SamplingParams
from engine.__main__ import build_parser, main
from engine.outputs import RequestOutput
from tests.tiny_causal import make_gpt2
from tests.tiny_masked import make_masked_lm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 120


def run_cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return make_gpt2(tmp_path_factory.mktemp("ckpt"))


def one_error_line(err) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    stdout = capsys.readouterr().out
    for flag in ("--model", "--prompt", "--max-tokens", "--min-tokens", "--temperature", "--top-k", "--top-p",
                 "--seed", "--stop", "--stop-token-id", "--ignore-eos", "--dtype", "--device", "--kernel-backend",
                 "--kv-block-size", "--num-kv-blocks", "--max-num-seqs", "--max-num-batched-tokens",
                 "--gpu-memory-utilization", "--no-prefix-caching", "--enforce-eager", "--allow-pickle", "--length",
                 "--iterations", "--remask", "--schedule", "--threshold", "--block-length", "--block-size",
                 "--stop-early", "--stats", "--debug", "--tensor-parallel-size"):
        assert flag in stdout, flag
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help and len(action.help) > 10, (name, action.option_strings)


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
    assert main(["generate", "--model", path, "--prompt", "the cat", "--length", "4", "--iterations", "3",
                 "--block-length", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("]")[0] for line in lines] == ["[pass 1", "[pass 2", "[pass 3"]


def test_block_size_flag_is_a_deprecated_alias(tmp_path, capsys):
    path = make_masked_lm("bert", str(tmp_path / "bert"))
    capsys.readouterr()  # what building the checkpoint printed
    base = ["generate", "--model", path, "--prompt", "the cat", "--length", "4", "--iterations", "3"]
    assert main(base + ["--block-length", "2"]) == 0
    new = capsys.readouterr()
    assert main(base + ["--block-size", "2"]) == 0
    old = capsys.readouterr()
    assert old.out == new.out and new.err == ""
    assert old.err == "warning: --block-size is deprecated, use --block-length\n"


@pytest.mark.parametrize("args, message", [
    ([], "required: COMMAND"),
    (["serve-nothing"], "invalid choice"),
    (["generate", "--prompt", "x"], "required: --model"),
    (["generate", "--model", "{gpt2}"], "required: --prompt"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--bogus"], "unrecognized arguments: --bogus"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--top-k", "abc"], "--top-k: invalid int value"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--dtype", "float64"], "--dtype: invalid choice"),
    (["generate", "--model", "{gpt2}", "--prompt", ""], "--prompt is empty"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--top-p", "3"], r"--top-p must be in (0, 1]"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--temperature", "nan"], "--temperature must be finite"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--top-k", str(2**64)], "--top-k must be in [-1, 9223372036854775807]"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--stop-token-id", "-2"], "--stop-token-id entry must be >= 0"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--min-tokens", "20"], "--min-tokens must be in [0, 16]"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--length", "4"], "--length does not apply"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--block-size", "4"], "--block-length does not apply"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--kv-block-size", "0"], "--kv-block-size must be in [1, "),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--gpu-memory-utilization", "2"], "--gpu-memory-utilization must be in"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--device", "tpu"], "device must be"),
    (["generate", "--model", "{gpt2}", "--prompt", "x", "--tensor-parallel-size", "0"],
     "--tensor-parallel-size must be in [1, "),
])
def test_usage_errors_are_one_line_and_status_2(gpt2, capsys, args, message):
    assert main([a.replace("{gpt2}", gpt2) for a in args]) == 2
    captured = capsys.readouterr()
    assert message in one_error_line(captured.err) and captured.out == ""


def test_runtime_errors_are_one_line_and_status_1(gpt2, tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"]) == 1
    assert "does not exist" in one_error_line(capsys.readouterr().err)
    assert main(["generate", "--model", gpt2, "--prompt", "the cat", "--max-tokens", "200"]) == 1
    assert "exceeds the model's context of 128" in one_error_line(capsys.readouterr().err)
    broken = tmp_path / "broken"
    shutil.copytree(gpt2, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 10)
    assert main(["generate", "--model", str(broken), "--prompt", "x"]) == 1
    assert "model.safetensors: not a readable safetensors file" in one_error_line(capsys.readouterr().err)
    assert main(["generate", "--model", gpt2, "--prompt", "x", "--tensor-parallel-size", "3"]) == 1
    assert "tensor_parallel_size 3 must divide the 4 attention heads" in one_error_line(capsys.readouterr().err)


def test_a_failed_request_and_an_unexpected_error(gpt2, capsys, monkeypatch):
    from engine.engine import Engine

    failed = RequestOutput("0", "x", [1], [], "", True, "error", error="the sampler broke")
    monkeypatch.setattr(Engine, "step", lambda self: [failed])
    assert main(["generate", "--model", gpt2, "--prompt", "x"]) == 1
    assert one_error_line(capsys.readouterr().err) == "error: the request failed: the sampler broke"

    def explode(self):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(Engine, "step", explode)
    assert main(["generate", "--model", gpt2, "--prompt", "x"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == "error: RuntimeError: boom second line (run with --debug for the traceback)"
    with pytest.raises(RuntimeError, match="boom"):
        main(["generate", "--model", gpt2, "--prompt", "x", "--debug"])


def test_warnings_are_one_line(gpt2, tmp_path, capsys):
    path = tmp_path / "eos"
    shutil.copytree(gpt2, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "eos_token_id": 999}))
    assert main(["generate", "--model", str(path), "--prompt", "the cat", "--max-tokens", "2"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("warning: ") and "eos token id 999" in line for line in err), err


def test_process_exit_status_and_stderr(gpt2, tmp_path):
    usage = run_cli("generate", "--model", gpt2, "--prompt", "x", "--top-p", "2")
    assert usage.returncode == 2 and usage.stdout == ""
    assert "--top-p must be in" in one_error_line(usage.stderr)
    runtime = run_cli("generate", "--model", str(tmp_path / "nope"), "--prompt", "x")
    assert runtime.returncode == 1 and "does not exist" in one_error_line(runtime.stderr)
    debug = run_cli("generate", "--model", str(tmp_path / "nope"), "--prompt", "x", "--debug")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "ValueError: model path" in debug.stderr


def test_closed_stdout_ends_quietly(gpt2):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "generate", "--model", gpt2, "--prompt", "the cat",
         "--max-tokens", "40", "--ignore-eos", "--num-kv-blocks", "16"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first token is written
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 0 and err == b"", err.decode()
