"""rope tables against HF transformers' own LlamaRotaryEmbedding, for every supported scaling."""
import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from engine.models.rope import rope_cos_sin, rope_tables_from_config

LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
SCALINGS = [None, {"rope_type": "linear", "factor": 4.0}, LLAMA3]


def _config(rope_scaling, head_dim=64, max_positions=512, theta=500000.0):
    return LlamaConfig(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        rope_theta=theta,
        rope_scaling=rope_scaling,
    )


def _hf_cos_sin(config, max_positions):
    rotary = LlamaRotaryEmbedding(config)
    positions = torch.arange(max_positions)[None, :]
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    half = cos.shape[-1] // 2
    # HF repeats the half-table: emb = cat(freqs, freqs).
    assert torch.equal(cos[0, :, :half], cos[0, :, half:])
    return cos[0, :, :half], sin[0, :, :half]


@pytest.mark.parametrize("rope_scaling", SCALINGS, ids=["default", "linear", "llama3"])
def test_tables_match_hf(rope_scaling):
    config = _config(rope_scaling)
    hf_cos, hf_sin = _hf_cos_sin(config, 512)
    cos, sin = rope_tables_from_config(config)
    assert cos.shape == (512, 32) and cos.dtype == torch.float32
    assert torch.equal(cos, hf_cos) and torch.equal(sin, hf_sin)


def test_llama3_scaling_changes_low_frequencies_only():
    plain_cos, _ = rope_cos_sin(64, 512, 500000.0, None)
    scaled_cos, _ = rope_cos_sin(64, 512, 500000.0, LLAMA3)
    # The fastest-rotating pair has a wavelength far below 64/4 and is kept; the slowest is scaled.
    assert torch.equal(plain_cos[:, 0], scaled_cos[:, 0])
    assert not torch.equal(plain_cos[:, -1], scaled_cos[:, -1])


def test_old_and_new_config_formats_agree():
    config = _config(LLAMA3)
    new_style = {"head_dim": 64, "max_position_embeddings": 512, "rope_parameters": dict(config.rope_parameters)}
    old_style = {
        "hidden_size": 256,
        "num_attention_heads": 4,
        "max_position_embeddings": 512,
        "rope_theta": 500000.0,
        "rope_scaling": {"type": "llama3", **{k: v for k, v in LLAMA3.items() if k != "rope_type"}},
    }
    for a, b in zip(rope_tables_from_config(new_style), rope_tables_from_config(old_style)):
        assert torch.equal(a, b)
    cos, _ = rope_tables_from_config({"head_dim": 8, "max_position_embeddings": 4})
    assert torch.equal(cos, rope_cos_sin(8, 4, 10000.0)[0])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"head_dim": 7}, "head_dim"),
        ({"max_positions": 0}, "max_positions"),
        ({"base": 1.0}, "base"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope_type"),
        ({"rope_scaling": {"rope_type": "linear"}}, "factor"),
        ({"rope_scaling": {**LLAMA3, "high_freq_factor": 0.5}}, "high_freq_factor"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    args = {"head_dim": 8, "max_positions": 4, "base": 10000.0, **kwargs}
    with pytest.raises(ValueError, match=name):
        rope_cos_sin(**args)
