"""Gather one GPU session's results into at most MAX_FILES files under OUT.

    python -m benchmarks.gpu_session --work DIR --out DIR

benchmarks/gpu_session.sh runs each stage into a scratch folder (--work: its log, its exit
code and duration in status.txt, its kernels.json / compile.json / scale.json) and the
headline report into OUT/report. This writes the rest of what comes back from the device:

    OUT/session.md    the stages (exit code, seconds), the GPU and versions, then every
                      table: kernel checks, compile report, scale check, the GPU tests' summary
    OUT/session.json  the same as data, with the last lines of each stage's log
    OUT/report/       report.md, results.json and the report's plots

Files beyond MAX_FILES in total (or deeper than OUT/report/) are moved back to --work and
listed in session.md, so the session's output always fits what the device returns.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

MAX_FILES = 8
MAX_DEPTH = 2  # OUT/<folder>/<file>
LOG_TAIL_LINES = 40
# Stage name (as gpu_session.sh logs it) -> the JSON and markdown it leaves in --work.
STAGE_RESULTS = {"gpu_check": "kernels", "compile": "compile", "scale_check": "scale"}
TITLES = {"gpu_check": "Kernel checks", "compile": "Compile report", "scale_check": "AR at real model sizes"}
SESSION_FILES = ("session.md", "session.json")


def read_status(work: Path) -> list[dict]:
    """status.txt lines "name exit_code seconds", in the order the stages ran."""
    path = work / "status.txt"
    stages = []
    for line in path.read_text().splitlines() if path.exists() else []:
        name, code, seconds = line.split()
        stages.append({"stage": name, "exit_code": int(code), "seconds": int(seconds)})
    return stages


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _text(path: Path) -> str:
    return path.read_text(errors="replace").strip() if path.exists() else "not recorded"


def _without_title(markdown: str) -> str:
    """A stage's markdown without its first-level title, its headings one level down."""
    lines = [line for line in markdown.splitlines() if not line.startswith("# ")]
    return "\n".join("#" + line if line.startswith("## ") else line for line in lines).strip()


def cap_files(out: Path, work: Path) -> list[str]:
    """Leave room for the session files: keep at most MAX_FILES - 2 other files under out,
    none deeper than MAX_DEPTH, text (.md, .json) before the rest; move the others to
    work/overflow. Returns the moved paths, relative to out."""
    others = [p for p in out.rglob("*") if p.is_file() and not (p.parent == out and p.name in SESSION_FILES)]
    others.sort(key=lambda p: (p.suffix not in (".md", ".json"), str(p)))
    room, moved = MAX_FILES - len(SESSION_FILES), []
    for path in others:
        if room > 0 and len(path.relative_to(out).parts) <= MAX_DEPTH:
            room -= 1
            continue
        target = work / "overflow" / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target)
        moved.append(str(path.relative_to(out)))
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    return moved


def collect(work: Path, out: Path) -> dict:
    """Write session.md and session.json into out from the stage outputs in work."""
    out.mkdir(parents=True, exist_ok=True)
    moved = cap_files(out, work)
    stages = read_status(work)
    session = {"gpu": _text(work / "gpu.txt"), "versions": _text(work / "versions.txt"), "stages": stages,
               "moved_to_work": moved}
    sections = []
    for stage in stages:
        stage["log_tail"] = _tail(work / f"{stage['stage']}.log")
    for name, stem in STAGE_RESULTS.items():
        data, table = work / f"{stem}.json", work / f"{stem}.md"
        session[name] = json.loads(data.read_text()) if data.exists() else None
        body = _without_title(table.read_text()) if table.exists() else f"No results: see the {name} log."
        sections.append(f"## {TITLES[name]}\n\n{body}\n")
    pytest_tail = _tail(work / "pytest.log", 1)
    session["pytest"] = pytest_tail
    (out / "session.json").write_text(json.dumps(session, indent=2))

    status_rows = [f"| {s['stage']} | {s['exit_code']} | {s['seconds']} |" for s in stages]
    lines = ["# GPU session", "", f"GPU: {session['gpu']}", "", f"torch, triton, transformers, Python: {session['versions']}",
             "", "| stage | exit code | seconds |", "|---|---|---|", *status_rows, "",
             f"GPU tests: {pytest_tail or 'no summary (see the pytest log in session.json)'}", "",
             "The headline report is in [report/report.md](report/report.md).", "", *sections]
    if moved:
        lines += ["## Files left on the device", "", "Over the limit of what comes back:", "",
                  *[f"- {name}" for name in moved], ""]
    (out / "session.md").write_text("\n".join(lines))
    return session


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="the stages' scratch folder (logs, status.txt, JSON)")
    parser.add_argument("--out", type=Path, required=True, help="the folder that comes back from the device")
    args = parser.parse_args(argv)
    session = collect(args.work, args.out)
    failed = [s["stage"] for s in session["stages"] if s["exit_code"] != 0]
    print(f"wrote {args.out / 'session.md'} and {args.out / 'session.json'}"
          + (f"; failed stages: {', '.join(failed)}" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
