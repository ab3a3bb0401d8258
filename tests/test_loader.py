"""load_model: checkpoint discovery, refusals with clear messages, dtypes, name mapping."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, GPTNeoXConfig

from engine.attention import AttentionMetadata
from engine.models.loader import load_model
from tests.tiny_causal import hf_model, make_gpt2, make_llama

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return make_gpt2(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def gpt2_copy(gpt2_dir, tmp_path):
    """A private copy of the GPT-2 checkpoint that a test may damage."""
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in os.listdir(gpt2_dir):
        (folder / name).write_bytes(open(os.path.join(gpt2_dir, name), "rb").read())
    return folder


def _logits(loaded, token_ids=(5, 9, 2, 7)):
    ids = torch.tensor(token_ids)
    cu = torch.tensor([0, len(ids)], dtype=torch.int32)
    with torch.no_grad():
        hidden = loaded.model(ids, torch.arange(len(ids)), AttentionMetadata("prefill", cu))
    return loaded.model.compute_logits(hidden)


def test_loaded_model_fields(gpt2_dir):
    loaded = load_model(gpt2_dir)
    assert loaded.kind == "causal" and loaded.architecture == "GPT2LMHeadModel"
    assert (loaded.vocab_size, loaded.max_positions) == (128, 128)
    assert loaded.eos_token_ids == [loaded.tokenizer.eos_token_id]
    assert not loaded.model.training
    params = list(loaded.model.parameters())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" and not p.requires_grad for p in params)
    # GPT-2 saves no lm_head: the head is the token embedding
    assert loaded.model.lm_head.weight is loaded.model.wte.weight


def test_missing_path(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_path_is_a_file(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="not a directory"):
        load_model(tmp_path / "weights.bin")


def test_folder_without_config(tmp_path):
    with pytest.raises(ValueError, match="not a Hugging Face checkpoint"):
        load_model(tmp_path)


def test_unsupported_architecture_lists_supported(tmp_path):
    config = GPTNeoXConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4)
    config.architectures = ["GPTNeoXForCausalLM"]
    config.save_pretrained(tmp_path)
    save_file({"embed.weight": torch.zeros(2, 2)}, str(tmp_path / WEIGHTS))
    with pytest.raises(ValueError, match=r"GPTNeoXForCausalLM.*supported:.*GPT2LMHeadModel"):
        load_model(tmp_path)


def test_folder_without_weights(gpt2_copy):
    os.remove(gpt2_copy / WEIGHTS)
    with pytest.raises(ValueError, match="no weights"):
        load_model(gpt2_copy)


def test_pickle_weights_need_allow_pickle(gpt2_dir, gpt2_copy):
    torch.save(load_file(str(gpt2_copy / WEIGHTS)), gpt2_copy / "pytorch_model.bin")
    os.remove(gpt2_copy / WEIGHTS)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_model(gpt2_copy)
    from_pickle = load_model(gpt2_copy, allow_pickle=True)
    torch.testing.assert_close(_logits(from_pickle), _logits(load_model(gpt2_dir)), atol=0, rtol=0)


def test_sharded_safetensors(tmp_path):
    whole = make_llama(tmp_path / "whole")
    sharded = str(tmp_path / "sharded")
    hf_model(whole).save_pretrained(sharded, max_shard_size="40KB")
    assert os.path.isfile(os.path.join(sharded, "model.safetensors.index.json"))
    assert not os.path.isfile(os.path.join(sharded, WEIGHTS))
    torch.testing.assert_close(_logits(load_model(sharded)), _logits(load_model(whole)), atol=0, rtol=0)


def test_base_model_names_without_prefix(gpt2_dir, gpt2_copy):
    """Checkpoints of the bare GPT2Model name tensors without the "transformer." prefix."""
    weights = load_file(str(gpt2_copy / WEIGHTS))
    save_file({k.removeprefix("transformer."): v for k, v in weights.items()}, str(gpt2_copy / WEIGHTS))
    torch.testing.assert_close(_logits(load_model(gpt2_copy)), _logits(load_model(gpt2_dir)), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", torch.float16])
def test_dtype(gpt2_dir, dtype):
    loaded = load_model(gpt2_dir, dtype=dtype)
    expected = dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype)
    assert {p.dtype for p in loaded.model.parameters()} == {expected}


@pytest.mark.parametrize("dtype", ["int8", "half", torch.int32])
def test_bad_dtype(gpt2_dir, dtype):
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_model(gpt2_dir, dtype=dtype)


def test_bad_kernel_backend(gpt2_dir):
    with pytest.raises(ValueError, match="kernel_backend"):
        load_model(gpt2_dir, kernel_backend="cuda")


def test_missing_weight_is_named(gpt2_copy):
    weights = load_file(str(gpt2_copy / WEIGHTS))
    del weights["transformer.h.1.mlp.c_fc.weight"]
    save_file(weights, str(gpt2_copy / WEIGHTS))
    with pytest.raises(ValueError, match=r"missing weights: transformer\.h\.1\.mlp\.c_fc\.weight"):
        load_model(gpt2_copy)


def test_unexpected_weight_is_named(gpt2_copy):
    weights = load_file(str(gpt2_copy / WEIGHTS))
    weights["transformer.h.0.extra.weight"] = torch.zeros(3)
    save_file(weights, str(gpt2_copy / WEIGHTS))
    with pytest.raises(ValueError, match=r"unexpected weights: transformer\.h\.0\.extra\.weight"):
        load_model(gpt2_copy)


def test_wrong_shape_is_named(gpt2_copy):
    weights = load_file(str(gpt2_copy / WEIGHTS))
    weights["transformer.ln_f.bias"] = torch.zeros(63)
    save_file(weights, str(gpt2_copy / WEIGHTS))
    with pytest.raises(ValueError, match=r"transformer\.ln_f\.bias has shape \(63,\)"):
        load_model(gpt2_copy)


def test_no_tokenizer_files(gpt2_copy):
    for name in os.listdir(gpt2_copy):
        if name.startswith(("tokenizer", "special_tokens")):
            os.remove(gpt2_copy / name)
    assert load_model(gpt2_copy).tokenizer is None


def test_eos_ids_merged_from_generation_config(gpt2_copy):
    GenerationConfig(eos_token_id=[7, 1, 7]).save_pretrained(gpt2_copy)
    config = json.loads((gpt2_copy / "config.json").read_text())
    assert load_model(gpt2_copy).eos_token_ids == [7, config["eos_token_id"]]
