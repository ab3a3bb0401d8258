"""load_model refuses a damaged checkpoint with a ValueError naming the file and the problem,
never advising to lower a safety, and drops an end-of-sequence id the model cannot produce."""
import json
import os
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from engine.models.loader import load_model, read_architecture
from tests.tiny_causal import hf_model, make_gpt2, make_llama
from tests.tiny_masked import make_masked_lm

WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"
UNSAFE_ADVICE = ("weights_only", "trust_remote_code", "remote code")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return make_gpt2(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    sharded = str(root / "sharded")
    hf_model(make_llama(root / "whole")).save_pretrained(sharded, max_shard_size="40KB")
    return sharded


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def gpt2(gpt2_dir, tmp_path):
    return _copy(gpt2_dir, tmp_path)


@pytest.fixture
def sharded(sharded_dir, tmp_path):
    return _copy(sharded_dir, tmp_path)


def refused(path, message, **kwargs) -> str:
    """load_model(path) raises ValueError matching `message`; returns the message."""
    with pytest.raises(ValueError, match=message) as info:
        load_model(path, **kwargs)
    text = str(info.value)
    assert not any(word in text for word in UNSAFE_ADVICE), text
    return text


def _edit_json(file, edit):
    data = json.loads(file.read_text())
    edit(data)
    file.write_text(json.dumps(data))


# ---- weights ---------------------------------------------------------------------------

@pytest.mark.parametrize("keep", [0, 7, 100, 0.5, 0.999])
def test_truncated_safetensors(gpt2, keep):
    data = (gpt2 / WEIGHTS).read_bytes()
    (gpt2 / WEIGHTS).write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    text = refused(gpt2, "not a readable safetensors file; it may be truncated or corrupt")
    assert str(gpt2 / WEIGHTS) in text


def test_garbage_safetensors(gpt2):
    (gpt2 / WEIGHTS).write_bytes(b"\xff" * 4096)
    refused(gpt2, rf"{gpt2 / WEIGHTS}: not a readable safetensors file")


@pytest.mark.parametrize("payload", [b"garbage" * 20, b"", b"\x80\x04K\x01."])
def test_garbage_pickle(gpt2, payload):
    os.remove(gpt2 / WEIGHTS)
    (gpt2 / "pytorch_model.bin").write_bytes(payload)
    refused(gpt2, rf"{gpt2 / 'pytorch_model.bin'}: (not a readable weights-only PyTorch checkpoint|must hold)",
            allow_pickle=True)


def test_pickle_with_code_is_refused_without_running_it(gpt2, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    os.remove(gpt2 / WEIGHTS)
    torch.save({"w": Payload()}, gpt2 / "pytorch_model.bin")
    refused(gpt2, "not a readable weights-only PyTorch checkpoint", allow_pickle=True)
    assert not marker.exists()


def test_pickle_of_nested_dicts(gpt2):
    weights = load_file(str(gpt2 / WEIGHTS))
    os.remove(gpt2 / WEIGHTS)
    torch.save({"state_dict": weights}, gpt2 / "pytorch_model.bin")
    refused(gpt2, "must hold a flat mapping of tensor names to tensors", allow_pickle=True)


def test_weight_errors_name_the_file(gpt2):
    weights = load_file(str(gpt2 / WEIGHTS))
    del weights["transformer.ln_f.bias"]
    save_file(weights, str(gpt2 / WEIGHTS))
    refused(gpt2, rf"{gpt2 / WEIGHTS}: .*missing weights: transformer\.ln_f\.bias")


# ---- shard index -----------------------------------------------------------------------

def test_index_not_json(sharded):
    (sharded / INDEX).write_text("{not json")
    refused(sharded, rf"{sharded / INDEX}: not valid JSON")


@pytest.mark.parametrize("weight_map", [None, [], "model-00001.safetensors", {}])
def test_index_weight_map_malformed(sharded, weight_map):
    _edit_json(sharded / INDEX, lambda d: d.update(weight_map=weight_map))
    refused(sharded, rf"{sharded / INDEX}: must hold a non-empty \"weight_map\" object")


def test_index_not_an_object(sharded):
    (sharded / INDEX).write_text("[1, 2]")
    refused(sharded, "must hold a non-empty")


def test_index_names_a_missing_shard(sharded):
    shard = sorted(n for n in os.listdir(sharded) if n.endswith(".safetensors"))[0]
    os.remove(sharded / shard)
    refused(sharded, rf"{sharded / INDEX}: lists shard '{shard}' .*which is missing")


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "", 3])
def test_index_shard_outside_the_folder(sharded, shard):
    _edit_json(sharded / INDEX, lambda d: d["weight_map"].update({"model.norm.weight": shard}))
    refused(sharded, "must be a file name inside the folder")


def test_index_disagrees_with_shards(sharded):
    def move(d):
        shards = sorted(set(d["weight_map"].values()))
        name = next(n for n, s in d["weight_map"].items() if s == shards[0])
        d["weight_map"][name] = shards[1]
    _edit_json(sharded / INDEX, move)
    refused(sharded, rf"{sharded / INDEX}: lists .* in model-.*\.safetensors, which does not hold them")


def test_tensor_in_two_shards(sharded):
    shards = sorted(n for n in os.listdir(sharded) if n.endswith(".safetensors"))
    first = load_file(str(sharded / shards[0]))
    second = load_file(str(sharded / shards[1]))
    second.update(first)
    save_file(second, str(sharded / shards[1]))
    refused(sharded, "is also in")


# ---- config.json -----------------------------------------------------------------------

@pytest.mark.parametrize("file, content, message", [
    ("config.json", '{"model_type": "gpt2",', "{file}: not valid JSON"),
    ("config.json", "[]", "{file}: must hold a JSON object, got list"),
    ("config.json", b"\xff\xfe", "{file}: not valid JSON"),
    ("generation_config.json", "{", "{file}: not a valid generation config"),
    ("tokenizer.json", "{broken", r"{folder}: the tokenizer \(tokenizer.json.*\) cannot be loaded"),
])
def test_unreadable_file(gpt2, file, content, message):
    write = (gpt2 / file).write_bytes if isinstance(content, bytes) else (gpt2 / file).write_text
    write(content)
    refused(gpt2, message.format(file=gpt2 / file, folder=gpt2))


@pytest.mark.parametrize("architecture, model_type", [
    ("BertForMaskedLM", "gpt2"), ("GPT2LMHeadModel", "llama"), ("LlamaForCausalLM", "bert"),
    ("GPT2LMHeadModel", None), ("GPT2LMHeadModel", 7),
])
def test_architecture_contradicts_model_type(gpt2, architecture, model_type):
    _edit_json(gpt2 / "config.json", lambda d: d.update(architectures=[architecture], model_type=model_type))
    text = refused(gpt2, rf"architectures names {architecture} but model_type is .*which contradicts it")
    assert str(gpt2 / "config.json") in text


def test_llama_family_model_types_agree(tmp_path):
    path = make_llama(tmp_path)
    _edit_json(tmp_path / "llama" / "config.json", lambda d: d.update(architectures=["MistralForCausalLM"]))
    assert read_architecture(path) == ("MistralForCausalLM", "causal")


@pytest.mark.parametrize("architectures", ["GPT2LMHeadModel", [3], {"a": 1}])
def test_architectures_not_a_list_of_names(gpt2, architectures):
    _edit_json(gpt2 / "config.json", lambda d: d.update(architectures=architectures))
    refused(gpt2, "architectures must be a list of class names")


def test_no_architectures(gpt2):
    _edit_json(gpt2 / "config.json", lambda d: d.pop("architectures"))
    refused(gpt2, r"unsupported architecture \(none listed\); supported:")


@pytest.mark.parametrize("field, value, message", [
    ("vocab_size", 0, "vocab_size must be >= 1"),
    ("vocab_size", "many", "(vocab_size|not a valid config)"),
    ("n_positions", 0, "max_position_embeddings must be >= 1"),
    ("n_head", 0, "cannot build GPT2LMHeadModel from it"),
])
def test_config_fields_out_of_range(gpt2, field, value, message):
    _edit_json(gpt2 / "config.json", lambda d: d.update({field: value}))
    text = refused(gpt2, message)
    assert str(gpt2 / "config.json") in text


def test_custom_code_is_never_run(gpt2):
    (gpt2 / "custom.py").write_text("raise SystemExit('custom code ran')\n")
    _edit_json(gpt2 / "config.json", lambda d: d.update(model_type="custom", auto_map={"AutoConfig": "custom.Config"}))
    refused(gpt2, "contradicts it")


# ---- tokenizer and special ids ---------------------------------------------------------

@pytest.mark.parametrize("file", ["config.json", "generation_config.json"])
def test_eos_id_non_int(gpt2, file):
    _edit_json(gpt2 / file, lambda d: d.update(eos_token_id="end"))
    refused(gpt2, rf"{gpt2 / file}: .*eos_token_id")


def test_eos_beyond_the_vocabulary_is_dropped_with_a_warning(gpt2):
    vocab = json.loads((gpt2 / "config.json").read_text())["vocab_size"]
    _edit_json(gpt2 / "generation_config.json", lambda d: d.update(eos_token_id=[vocab + 5, 3]))
    with pytest.warns(UserWarning, match=rf"generation_config.json: eos token id {vocab + 5} is outside the model's "
                                         rf"vocabulary \[0, {vocab}\); ignored"):
        loaded = load_model(gpt2)
    assert vocab + 5 not in loaded.eos_token_ids and 3 in loaded.eos_token_ids


def test_every_eos_dropped(gpt2):
    tokenizer = AutoTokenizer.from_pretrained(gpt2)
    tokenizer.add_special_tokens({"eos_token": "<end>"})  # a new id, one past the model's vocabulary
    tokenizer.save_pretrained(gpt2)
    os.remove(gpt2 / "generation_config.json")
    _edit_json(gpt2 / "config.json", lambda d: d.update(eos_token_id=-1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(gpt2)
    messages = [str(w.message) for w in caught]
    assert any("config.json: eos token id -1" in m for m in messages), messages
    assert any(f"the tokenizer in {gpt2}: eos token id {tokenizer.eos_token_id}" in m for m in messages), messages
    assert any("no end-of-sequence id is left" in m for m in messages), messages
    assert loaded.eos_token_ids == []


def test_masked_template_token_beyond_the_vocabulary(tmp_path):
    path = make_masked_lm("bert", str(tmp_path / "bert"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_special_tokens({"mask_token": "[MASK2]"})
    tokenizer.save_pretrained(path)
    refused(path, rf"{path}: the tokenizer's mask token id \d+ is outside the model's vocabulary")
