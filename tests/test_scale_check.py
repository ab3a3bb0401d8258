"""The real-size AR check runs end to end on a toy shape: random checkpoint saved, loaded
through the engine, engine and HF generate() timed on the same work, roofline attached."""
import json

from benchmarks import scale_check


def test_scale_check_on_a_toy_shape(tmp_path):
    scale_check.main(["--models", "tiny", "--batch-sizes", "1", "3", "--prompt-len", "5", "--new-tokens", "4",
                      "--reps", "1", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "scale.json").read_text())
    assert [r["batch"] for r in report["rows"]] == [1, 3]
    for r in report["rows"]:
        assert r["generated_tokens"] == r["hf_generated_tokens"] == r["batch"] * 4
        assert r["speedup"] > 0 and 0 < r["roofline_pct"] < 100
    assert "| tiny |" in (tmp_path / "scale.md").read_text()
