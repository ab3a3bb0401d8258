"""The report on user checkpoints (here tiny random HF models): no reference-language scores,
judge perplexity instead, every part still produced."""
import json

from benchmarks.__main__ import main
from tests.tiny_causal import make_gpt2
from tests.tiny_masked import make_masked_lm


def test_quick_report_on_given_checkpoints(tmp_path):
    ar = make_gpt2(tmp_path)
    mlm = make_masked_lm("bert", tmp_path / "bert")
    out = tmp_path / "report"
    main(["--quick", "--ar-model", ar, "--mlm-model", mlm, "--judge", ar, "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["mlm_models"] == {"mlm": mlm}  # only the masked LM given, not the bundled ones
    assert not results["meta"]["experiment"]
    for row in results["quality"]["rows"]:
        assert "validity" not in row  # the reference language scores only the experiment's models
        assert row["judge_perplexity"] >= 1
    assert {r["model"] for r in results["throughput"]} == {"gpt2", "bert"}
    for r in results["throughput"]:
        assert r["speedup"] > 0 and r["same_as_hf"] in (True, False)
    text = (out / "report.md").read_text()
    assert "## 3. The roofline" in text and "judge ppl" in text
