"""Every kernel configuration the engine can launch compiles for Hopper (sm_90) and Ampere
(sm_80) with Triton's real GPU compiler, which needs no GPU, and nothing on the decode path
spills registers (benchmarks/compile_report.py: the configurations come from the launchers
themselves, recorded while they run on meta tensors). The GPU session's collector then
gathers that report with the other stages' results into the files the device returns.

The report runs in a subprocess: this process imported the kernels in interpreter mode.
"""
import json
import os
import subprocess
import sys

import pytest

import kernels
from benchmarks import gpu_check, gpu_session

PUBLIC_KERNELS = set(kernels.__all__)


@pytest.fixture(scope="module")
def compile_report(tmp_path_factory):
    """(report dict, folder holding compile.json and compile.md, the process result)."""
    out = tmp_path_factory.mktemp("compile")
    jobs = str(min(2, os.cpu_count() or 1))
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.compile_report", "--arch", "90", "80", "--jobs", jobs,
         "--no-progress", "--out", str(out)],
        env=dict(os.environ, TRITON_INTERPRET="0"), capture_output=True, text=True, timeout=1500,
    )
    assert (out / "compile.json").exists(), result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads((out / "compile.json").read_text()), out, result


def test_every_launch_configuration_compiles_for_sm90_and_sm80(compile_report):
    report, out, result = compile_report
    assert not report["problems"], "\n".join(report["problems"])
    assert result.returncode == 0, result.stderr[-4000:]

    rows = report["rows"]
    assert {r["arch"] for r in rows} == {"sm_90", "sm_80"}
    assert all("error" not in r and r["registers"] > 0 for r in rows)
    # Every public kernel function launched at least one compiled kernel.
    launched = {name for r in rows for name in r["launched_by"]}
    assert launched == PUBLIC_KERNELS, PUBLIC_KERNELS ^ launched
    assert "| kernel |" in (out / "compile.md").read_text()


def test_gpu_session_returns_at_most_eight_files(compile_report, tmp_path):
    """The collector over real stage outputs (the compile report, a quick kernel check) and
    status lines as gpu_session.sh writes them; a report folder with one file too many."""
    _, compile_out, _ = compile_report
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    for name in ("compile.json", "compile.md"):
        (work / name).write_bytes((compile_out / name).read_bytes())
    assert gpu_check.main(["--quick", "--families", "sampling", "--out", str(work)]) == 0
    (work / "status.txt").write_text("gpu_check 0 12\ncompile 0 80\npytest 1 90\nscale_check 124 150\n")
    (work / "pytest.log").write_text("F..\n1 failed, 2 passed in 3.00s\n")
    report = out / "report"
    report.mkdir(parents=True)
    for name in ("report.md", "results.json", "a.png", "b.png", "c.png", "d.png", "trace.json"):
        (report / name).write_text(name)

    session = gpu_session.collect(work, out)

    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert len(files) == gpu_session.MAX_FILES and all(len(p.split("/")) <= 2 for p in files)
    assert "session.md" in files and "report/report.md" in files and "report/results.json" in files
    assert session["moved_to_work"] == ["report/d.png"]
    text = (out / "session.md").read_text()
    assert "| pytest | 1 | 90 |" in text and "1 failed, 2 passed" in text
    assert "## Kernel checks" in text and "sample(" in text
    assert "## Compile report" in text and "### sm_90" in text
    assert "No results: see the scale_check log." in text and "report/d.png" in text
    assert json.loads((out / "session.json").read_text())["compile"]["problems"] == []
