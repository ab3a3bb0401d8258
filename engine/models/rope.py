"""Rotary position tables (cos, sin) for the GPT-NeoX / Llama half-rotation layout.

Position p rotates the pair (x[i], x[i + D/2]) by the angle p * inv_freq[i], with
inv_freq[i] = base^(-2i/D). Rope scaling only changes inv_freq, so it is folded into the
tables here and the rotary kernel never sees it:
  - "linear": every frequency divided by `factor`;
  - "llama3": wavelengths longer than original_max_position_embeddings / low_freq_factor are
    divided by `factor`, those shorter than original / high_freq_factor are kept, and the band
    in between is blended linearly in original / wavelength.
inv_freq is computed on the CPU in fp32 with the same operations as HF transformers, so the
tables match HF's rotary embedding bit for bit.
"""
import math

import torch

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def rope_cos_sin(head_dim, max_positions, base, rope_scaling=None, device="cpu"):
    """(cos, sin) of shape [max_positions, head_dim // 2], fp32, on `device`."""
    if not isinstance(head_dim, int) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be an even integer >= 2, got {head_dim!r}")
    if not isinstance(max_positions, int) or max_positions < 1:
        raise ValueError(f"max_positions must be an integer >= 1, got {max_positions!r}")
    if not isinstance(base, (int, float)) or not base > 1:
        raise ValueError(f"base must be a number > 1, got {base!r}")
    inv_freq = _scaled_inv_freq(_inv_freq(head_dim, base), rope_scaling)
    angles = torch.arange(max_positions, device=device).float()[:, None] * inv_freq.to(device)[None, :]
    return angles.cos(), angles.sin()


def rope_tables_from_config(config, device="cpu"):
    """rope_cos_sin for an HF config object or config.json dict.

    Reads transformers 5.x's `rope_parameters` (which carries rope_theta and the scaling) or
    the older `rope_theta` + `rope_scaling` pair.
    """
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    params = dict(get("rope_parameters") or {})
    scaling = dict(get("rope_scaling") or {})
    base = params.get("rope_theta", get("rope_theta", 10000.0))
    scaling.update({k: v for k, v in params.items() if k != "rope_theta"})
    partial = scaling.pop("partial_rotary_factor", get("partial_rotary_factor", 1.0)) or 1.0
    if scaling.get("rope_type", scaling.get("type")) == "llama3":
        scaling.setdefault("original_max_position_embeddings", get("max_position_embeddings"))
    if partial != 1.0:
        raise ValueError(f"partial_rotary_factor must be 1.0 (rotary over the whole head), got {partial}")
    head_dim = get("head_dim") or get("hidden_size") // get("num_attention_heads")
    return rope_cos_sin(head_dim, get("max_position_embeddings"), base, scaling or None, device)


def _inv_freq(head_dim, base):
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (base**exponents)


def _scaled_inv_freq(inv_freq, rope_scaling):
    if not rope_scaling:
        return inv_freq
    if not isinstance(rope_scaling, dict):
        raise ValueError(f"rope_scaling must be a dict or None, got {type(rope_scaling).__name__}")
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / _positive(rope_scaling, "factor")
    if rope_type == "llama3":
        return _llama3_inv_freq(inv_freq, *(_positive(rope_scaling, key) for key in _LLAMA3_KEYS))
    raise ValueError(f"rope_scaling rope_type must be one of {SUPPORTED_ROPE_TYPES}, got {rope_type!r}")


def _llama3_inv_freq(inv_freq, factor, low_freq_factor, high_freq_factor, original_max_positions):
    if not high_freq_factor > low_freq_factor:
        raise ValueError(
            f"rope_scaling high_freq_factor ({high_freq_factor}) must exceed low_freq_factor ({low_freq_factor})"
        )
    long_wavelen = original_max_positions / low_freq_factor
    short_wavelen = original_max_positions / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    slowed = torch.where(wavelen > long_wavelen, inv_freq / factor, inv_freq)
    # Between the two wavelengths: blend the slowed and the original frequency.
    blend = (original_max_positions / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - blend) * slowed / factor + blend * slowed
    in_band = (wavelen >= short_wavelen) & (wavelen <= long_wavelen)
    return torch.where(in_band, blended, slowed)


def _positive(rope_scaling, key):
    value = rope_scaling.get(key)
    if not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"rope_scaling {key} must be a positive number, got {value!r}")
    return value
