"""Training is reproducible and resumable, and the sweep runs, resumes and reports."""
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from benchmarks import sweep, sweep_plan, train
from benchmarks.corpus import SentenceStream

TINY = train.TrainConfig(model="cmlm-bert", size="tiny", steps=6, batch_size=8, eval_every=3, eval_sentences=40)


def test_training_is_reproducible():
    _, first = train.train_model(TINY, progress=False)
    _, again = train.train_model(TINY, progress=False)
    _, other = train.train_model(replace(TINY, seed=1), progress=False)
    assert first["eval"] == again["eval"] and first["tokens"] == again["tokens"]
    assert other["eval"] != first["eval"]
    assert first["heldout_floor"] > 0 and first["heldout_length_floor"] > 0


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    model, straight = train.train_model(TINY, progress=False)
    original = SentenceStream.batch

    def interrupt(self, step, batch_size):
        if step == 4:
            raise KeyboardInterrupt
        return original(self, step, batch_size)

    monkeypatch.setattr(SentenceStream, "batch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train.train_model(TINY, state_dir=tmp_path, progress=False)
    assert (tmp_path / train.STATE_FILE).exists()  # saved at step 3
    monkeypatch.setattr(SentenceStream, "batch", original)
    resumed_model, resumed = train.train_model(TINY, state_dir=tmp_path, progress=False)
    assert resumed["eval"] == straight["eval"]
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert a.equal(b)
    assert not (tmp_path / train.STATE_FILE).exists()


def test_bad_config_and_help():
    with pytest.raises(ValueError, match="model must be one of"):
        replace(TINY, model="gpt5").check()
    out = subprocess.run([sys.executable, "-m", "benchmarks.train", "--help"], capture_output=True, text=True,
                         cwd=Path(train.__file__).parent.parent, timeout=120)
    assert out.returncode == 0 and "--data" in out.stdout


@dataclass(frozen=True)
class SmallConfig(train.TrainConfig):
    batch_size: int = 8
    eval_every: int = 2
    eval_sentences: int = 40


def test_the_sweep_runs_resumes_and_reports(tmp_path, monkeypatch):
    points = [sweep_plan.Point("lr", m, "tiny", 4, lr) for lr in (3e-3, 1e-2) for m in ("ar-gpt2", "cmlm-bert")]
    points += [sweep_plan.Point("converged", m, "tiny", 6, None) for m in ("ar-gpt2", "cmlm-bert")]
    monkeypatch.setattr(sweep_plan, "plan", lambda: points)
    monkeypatch.setattr(sweep_plan, "LR_STEPS", 4)
    monkeypatch.setattr(sweep_plan, "TINY_LR_GRID", (3e-3, 1e-2))
    monkeypatch.setattr(sweep_plan, "lr_candidates", lambda p: [q for q in points[:4] if q.model == p.model])
    monkeypatch.setattr(train, "TrainConfig", SmallConfig)
    args = ["--results", str(tmp_path / "res"), "--work", str(tmp_path / "work"), "--eval-pairs", "12"]
    sweep.main(args + ["--max-points", "5"])
    files = sorted(p.name for p in (tmp_path / "res" / "points").glob("*.json"))
    assert len(files) == 5  # stopped after five, the last one still to run
    sweep.main(args)
    results = {p["point"]["key"]: p for p in map(json.loads, ((tmp_path / "res" / "points" / f).read_text()
                                                             for f in sorted(x.name for x in (tmp_path / "res" / "points").glob("*.json"))))}
    assert len(results) == 6
    for name in ("ar-gpt2", "cmlm-bert"):
        lrs = {p["point"]["lr"]: p["train"]["heldout_loss"] for p in results.values()
               if p["point"]["model"] == name and p["point"]["stage"] == "lr"}
        assert results[f"{name}_tiny_6_lrbest_fresh"]["point"]["lr"] == min(lrs, key=lrs.get)
    cmlm = results["cmlm-bert_tiny_6_lrbest_fresh"]
    assert set(cmlm["quality"]) == {"T=1", "T=4", "T=N", "L2R greedy", "L2R sampled"}
    assert cmlm["quality"]["T=N"]["validity"]["n"] == 12 and "single_mask" in cmlm["likelihood"]
    assert (tmp_path / "work" / "cmlm-bert_tiny_6_lrbest_fresh" / "model.safetensors").exists()

    monkeypatch.setattr(train, "train_model", lambda *a, **k: pytest.fail("a finished point was retrained"))
    sweep.main(args)  # everything done: nothing runs
    readme = (tmp_path / "res" / "README.md").read_text()
    assert "| cmlm-bert | tiny | 6 |" in readme and (tmp_path / "res" / "compute.png").exists()
