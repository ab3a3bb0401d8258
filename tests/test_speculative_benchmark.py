"""python -m benchmarks.speculative --quick on the bundled models: every part is produced and
greedy speculation changed no output."""
import json

from benchmarks.report import speculative_section
from benchmarks.speculative import main


def test_quick_speculative_report(tmp_path):
    main(["--quick", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "speculative.json").read_text())
    rows = results["rows"]
    assert {r["batch"] for r in rows} == {1, 4}
    assert all(r["identical_to_plain"] for r in rows)
    causal = [r for r in rows if r["config"] == "causal k=2"]
    assert all(1 <= r["mean_accepted_length"] <= 3 and r["speedup"] > 0 for r in causal)
    assert {b["config"] for b in results["roofline"]["bounds"]} == {"masked k=2 p=1", "causal k=2"}
    text = (tmp_path / "speculative.md").read_text()
    assert "## Speculative decoding" in text and "Every configuration produced exactly the plain greedy tokens" in text
    assert (tmp_path / "speculative.png").stat().st_size > 0
    assert "`benchmarks/assets/ar-gpt2`" in text and "`/" not in text  # checkpoints shown relative to the repository
    # the headline report's part 6 quotes these results when they share its folder
    section = "\n".join(speculative_section(results))
    assert "## 6. Speculative decoding" in section and "Every configuration produced exactly" in section
    assert "make bench-speculative" in "\n".join(speculative_section(None))
