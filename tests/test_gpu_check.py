"""`python -m benchmarks.gpu_check --quick` runs every kernel family end to end (on CPU in
Triton's interpreter), so the one-call GPU check cannot rot between GPU sessions."""
import json

from benchmarks import gpu_check


def test_gpu_check_quick_runs_every_family(tmp_path):
    assert gpu_check.main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "kernels.json").read_text())
    kernels = {row["kernel"] for row in report["rows"]}
    assert {"decode_attention", "store_kv", "prefill_attention", "paged_prefill_attention", "rms_norm",
            "layer_norm", "rotary_embedding", "rotary_store_kv", "silu_and_mul", "confidence_argmax", "rms_norm_linear"} <= kernels
    assert {f"decode_attention stages={s}" for s in (3, 4, 5)} <= kernels  # the num_stages sweep
    assert any(k.startswith("sample") for k in kernels) and any(k.startswith("gelu") for k in kernels)
    for row in report["rows"]:
        assert row["ok"] and row["max_rel_err"] <= row["tol"]
        assert row["ms"] > 0 and row["roofline_pct"] >= 0
    assert "| kernel |" in (tmp_path / "kernels.md").read_text()
