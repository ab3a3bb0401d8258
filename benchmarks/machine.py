"""The machine a result was measured on, for result folder names and report headers, and
the results folder every benchmark writes into by default."""
import datetime
import json
import platform
from pathlib import Path

import torch


def machine_name(device):
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(0).replace(" ", "-")
    return f"cpu-{platform.machine()}"


def results_folder(out, device) -> Path:
    """`out` when given, else benchmarks/results/<date>-<machine>/; created."""
    folder = Path(out) if out else Path("benchmarks/results") / f"{datetime.date.today()}-{machine_name(device)}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_report(folder, stem, report, markdown):
    """<stem>.json (the report's data) and <stem>.md (markdown(report)) into folder."""
    (folder / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (folder / f"{stem}.md").write_text(markdown(report))
    print(f"wrote {folder / f'{stem}.md'}")
