"""`make gpu`'s script, rehearsed on this CPU: every stage runs and the session comes back.

A GPU is lent rarely and for minutes, so the one-call session (benchmarks/gpu_session.sh)
must not meet a renamed flag or a broken stage there. REHEARSAL=1 runs the same stages at
CPU sizes; here under this interpreter (`make gpu-rehearsal` uses the GPU machine's stack).
Slow (about 4 minutes in CI): the stages are real, including the GPU tests and the compile report.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import gpu_session

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["gpu_check", "compile", "pytest", "report", "scale_check"]


def test_every_stage_of_the_gpu_session_passes_in_a_cpu_rehearsal(tmp_path):
    out = tmp_path / "session"
    env = dict(os.environ, REHEARSAL="1", PYTHON=sys.executable, OUT=str(out))
    result = subprocess.run(["bash", "benchmarks/gpu_session.sh"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=2400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    session = json.loads((out / "session.json").read_text())
    stages = {s["stage"]: s["exit_code"] for s in session["stages"]}
    assert stages == dict.fromkeys(STAGES, 0), (stages, (out / "session.md").read_text()[-3000:])
    assert session["gpu"].startswith("none: a rehearsal on CPU")
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= gpu_session.MAX_FILES
    assert (out / "report" / "report.md").exists() and (out / "report" / "results.json").exists()
    text = (out / "session.md").read_text()
    assert "## Kernel checks" in text and "## Compile report" in text and "## AR at real model sizes" in text
