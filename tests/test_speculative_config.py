"""speculative_config: bad values fail at EngineConfig construction; a draft that cannot serve
the target fails before any weights are loaded; the CLI flags build the same config."""
import os
import shutil

import pytest

from engine import LLM, EngineConfig
from engine.__main__ import main
from engine.speculative.config import SpeculativeConfig
from tests.tiny_causal import make_gpt2
from tests.tiny_masked import make_masked_lm
from tests.tiny_speculative import make_causal, make_masked

DRAFT = "some/draft"


@pytest.mark.parametrize("spec, error, message", [
    ({"model": DRAFT, "num_speculative_tokens": 0}, ValueError, r"num_speculative_tokens must be in \[1, "),
    ({"model": DRAFT, "num_speculative_tokens": -3}, ValueError, "num_speculative_tokens must be in"),
    ({"model": DRAFT, "num_speculative_tokens": "4"}, TypeError, "num_speculative_tokens must be an int"),
    ({"model": DRAFT, "num_speculative_tokens": 4, "draft_passes": 0}, ValueError, r"draft_passes must be in \[1, 4\]"),
    ({"model": DRAFT, "num_speculative_tokens": 4, "draft_passes": 5}, ValueError, r"draft_passes must be in \[1, 4\]"),
    ({"model": DRAFT, "num_speculative_tokens": 4, "draft_length": 3}, ValueError, "draft_length must be in"),
    ({"model": DRAFT, "num_speculative_tokens": 4, "adaptive": 1}, TypeError, "adaptive must be a bool"),
    ({"model": "", "num_speculative_tokens": 4}, TypeError, r"speculative_config\['model'\]"),
    ({"model": DRAFT}, TypeError, r"needs \['num_speculative_tokens'\]"),
    ({"model": DRAFT, "num_speculative_tokens": 2, "method": "eagle"}, TypeError, r"unknown key\(s\) \['method'\]"),
    ("some/draft", TypeError, "speculative_config must be a dict"),
])
def test_bad_values_fail_at_config(spec, error, message):
    with pytest.raises(error, match=message):
        EngineConfig(model="m", speculative_config=spec)


def test_config_takes_a_dict_or_the_dataclass():
    spec = EngineConfig(model="m", speculative_config={"model": DRAFT, "num_speculative_tokens": 3}).speculative_config
    assert spec == SpeculativeConfig(DRAFT, 3)
    assert EngineConfig(model="m", speculative_config=spec).speculative_config is spec


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec-config")
    return {
        "target": make_causal(root, "target"),
        "causal": make_causal(root, "small", layers=1, hidden=32),
        "masked": make_masked(root, "masked"),
        "small-vocab": make_masked(root, "small-vocab", vocab_size=100),
        "other-tokenizer": make_gpt2(root / "other"),  # causal specials only: other token ids
        "masked-target": make_masked_lm("bert", root / "bert"),
    }


def _without_weights(folder, tmp_path):
    """A copy of the folder whose weights file is garbage: loading it would fail."""
    copy = shutil.copytree(folder, tmp_path / os.path.basename(folder))
    with open(os.path.join(copy, "model.safetensors"), "wb") as f:
        f.write(b"not weights")
    return str(copy)


@pytest.mark.parametrize("target, draft, extra, message", [
    ("target", "other-tokenizer", {}, "has a different tokenizer"),
    ("target", "small-vocab", {}, r"vocabulary \(100\) is smaller than the target's \(128\)"),
    ("target", "causal", {"draft_passes": 2}, "draft_passes applies to a masked draft model"),
    ("target", "causal", {"draft_length": 4}, "draft_length applies to a masked draft model"),
    ("masked-target", "masked", {}, "needs a causal target model"),
])
def test_unusable_draft_fails_before_any_weights_load(folders, tmp_path, target, draft, extra, message):
    spec = {"model": _without_weights(folders[draft], tmp_path), "num_speculative_tokens": 2, **extra}
    with pytest.raises(ValueError, match=message):
        LLM(_without_weights(folders[target], tmp_path / "t"), speculative_config=spec)


def test_masked_draft_without_room_for_context(folders):
    spec = {"model": folders["masked"], "num_speculative_tokens": 2, "draft_length": 62}
    with pytest.raises(ValueError, match=r"draft_length \(62\) \+ 2 special tokens leave no room"):
        LLM(folders["target"], speculative_config=spec)


def test_cli_generates_with_a_draft_and_reports_bad_flags(folders, capsys):
    args = ["generate", "--model", folders["target"], "--prompt", "the cat", "--max-tokens", "6",
            "--temperature", "0", "--ignore-eos", "--num-kv-blocks", "32"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main(args + ["--speculative-model", folders["masked"], "--num-speculative-tokens", "3",
                        "--draft-passes", "2"]) == 0
    assert capsys.readouterr().out == plain
    assert main(args + ["--speculative-model", folders["masked"], "--num-speculative-tokens", "0"]) == 2
    assert "--num-speculative-tokens must be in [1, " in capsys.readouterr().err
    assert main(args + ["--speculative-model", folders["masked"]]) == 2
    assert "go together" in capsys.readouterr().err
    assert main(args + ["--speculative-model", folders["other-tokenizer"], "--num-speculative-tokens", "2"]) == 1
    assert "different tokenizer" in capsys.readouterr().err
