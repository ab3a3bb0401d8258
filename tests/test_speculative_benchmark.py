"""python -m benchmarks.speculative --quick on the bundled models: every part is produced and
greedy speculation changed no output."""
import json

from benchmarks.report import speculative_section
from benchmarks.speculative import main
from benchmarks.speculative_report import conclusions


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


def test_a_win_is_claimed_only_beyond_the_rounds_spread():
    def row(batch, speedup, low, high):
        return {"config": "causal k=2", "batch": batch, "speedup": speedup, "speedup_range": [low, high],
                "mean_accepted_length": 2.0, "acceptance_per_position": [0.9, 0.5], "identical_to_plain": True}

    results = {"rows": [{"config": "plain", "batch": 1, "identical_to_plain": True},
                        row(1, 1.2, 0.9, 1.5), row(4, 1.1, 1.02, 1.3)], "roofline": {"bounds": []}}
    text = "\n".join(conclusions(results))
    assert "every timed round: batch 4: causal k=2; at batch 1 no configuration is." in text
    results["rows"][-1] = row(4, 1.1, 0.95, 1.3)
    assert "No configuration is faster than plain decoding in every timed round" in "\n".join(conclusions(results))
