"""The causal models against HF transformers: packed prefill, then paged-cache steps."""
import pytest
import torch

from engine.attention import AttentionMetadata
from engine.models.loader import load_model
from tests.conftest import DEVICE
from tests.tiny_causal import MAKERS, hf_logits, hf_model

ARCHS = {
    "gpt2": ("gpt2", {}),
    "llama": ("llama", {}),
    "qwen2": ("qwen2", {}),
    "qwen2_tied": ("qwen2", {"tie_word_embeddings": True}),
    "mistral": ("mistral", {}),
}
TOL = 1e-4
BLOCK_SIZE = 4


def cases(archs, triton_archs):
    """(arch, backend) pairs: every arch on "torch"; on "triton" (slow in the interpreter) only
    the archs that reach different kernel paths."""
    return [(arch, "torch") for arch in archs] + [(arch, "triton") for arch in triton_archs]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """arch -> (checkpoint folder, fp32 HF reference model on DEVICE), built once per module."""
    out = {}
    for arch, (family, overrides) in ARCHS.items():
        path = MAKERS[family](tmp_path_factory.mktemp(arch), **overrides)
        out[arch] = (path, hf_model(path).to(DEVICE))
    return out


def _prompts(lengths, vocab_size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (n,), generator=g).tolist() for n in lengths]


def _cu_seqlens(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)


def _packed_prefill_logits(model, prompts):
    """Logits [sum(len), vocab] of prompts packed into one "prefill" step."""
    lengths = [len(p) for p in prompts]
    ids = torch.tensor([t for p in prompts for t in p], device=DEVICE)
    positions = torch.cat([torch.arange(n, device=DEVICE) for n in lengths])
    meta = AttentionMetadata("prefill", _cu_seqlens(lengths))
    with torch.no_grad():
        return model.compute_logits(model(ids, positions, meta))


# Triton: GPT-2 (LayerNorm, GELU, MHA) and Mistral (GQA, rotary, head_dim 32).
@pytest.mark.parametrize("arch, backend", cases(list(ARCHS), ["gpt2", "mistral"]))
def test_packed_prefill_matches_hf(checkpoints, arch, backend):
    path, reference = checkpoints[arch]
    loaded = load_model(path, device=DEVICE, kernel_backend=backend)
    lengths = [5, 1, 9]
    prompts = _prompts(lengths, loaded.vocab_size)
    logits = _packed_prefill_logits(loaded.model, prompts)
    assert logits.dtype == torch.float32 and logits.shape == (sum(lengths), loaded.vocab_size)
    for prompt, rows in zip(prompts, logits.split(lengths)):
        torch.testing.assert_close(rows, hf_logits(reference, prompt), atol=TOL, rtol=0)


HALF = torch.bfloat16 if DEVICE == "cuda" else torch.float16


@pytest.mark.parametrize("arch, backend", cases(["gpt2", "llama"], ["llama"]))
def test_half_precision_prefill_near_fp32_hf(checkpoints, arch, backend):
    """16-bit weights and activations (bf16 on the GPU; fp16 on CPU, where the interpreter's
    bf16 dots are unusable) stay within 16-bit rounding of the fp32 reference."""
    path, reference = checkpoints[arch]
    loaded = load_model(path, dtype=HALF, device=DEVICE, kernel_backend=backend)
    prompts = _prompts([7, 3], loaded.vocab_size)
    logits = _packed_prefill_logits(loaded.model, prompts)
    for prompt, rows in zip(prompts, logits.split([7, 3])):
        expected = hf_logits(reference, prompt)
        torch.testing.assert_close(rows.float(), expected, atol=0.05 * expected.abs().max().item(), rtol=0)


class PagedSequences:
    """Drives a model step by step over a small paged cache, as the runner will.

    Each sequence owns scattered blocks, so a wrong block-table lookup shows up.
    """

    def __init__(self, model, num_seqs, max_len):
        blocks_per_seq = -(-max_len // BLOCK_SIZE)
        num_blocks = num_seqs * blocks_per_seq
        layout = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(2))
        self.block_tables = layout.view(num_seqs, blocks_per_seq).to(DEVICE, torch.int32)
        for layer in model.attention_layers():
            shape = (num_blocks, BLOCK_SIZE, model.num_kv_heads, model.head_dim)
            layer.k_cache = torch.zeros(shape, device=DEVICE)
            layer.v_cache = torch.zeros(shape, device=DEVICE)
        self.model = model
        self.lengths = [0] * num_seqs

    def step(self, mode, new_tokens):
        """Append new_tokens[b] to sequence b; returns the logits of every new token per sequence."""
        positions, slots = [], []
        for b, tokens in enumerate(new_tokens):
            for p in range(self.lengths[b], self.lengths[b] + len(tokens)):
                positions.append(p)
                slots.append(int(self.block_tables[b, p // BLOCK_SIZE]) * BLOCK_SIZE + p % BLOCK_SIZE)
            self.lengths[b] += len(tokens)
        counts = [len(t) for t in new_tokens]
        meta = AttentionMetadata(
            mode, _cu_seqlens(counts), slot_mapping=torch.tensor(slots, device=DEVICE),
            context_lens=torch.tensor(self.lengths, dtype=torch.int32, device=DEVICE),
            block_tables=self.block_tables,
        )
        ids = torch.tensor([t for tokens in new_tokens for t in tokens], device=DEVICE)
        with torch.no_grad():
            logits = self.model.compute_logits(self.model(ids, torch.tensor(positions, device=DEVICE), meta))
        return logits.split(counts)


@pytest.mark.parametrize("arch, backend", cases(["gpt2", "llama", "qwen2", "mistral"], ["gpt2", "mistral"]))
def test_cached_steps_match_hf(checkpoints, arch, backend):
    """Prefill, a decode step, a two-token paged-prefill chunk, another decode step."""
    path, reference = checkpoints[arch]
    loaded = load_model(path, device=DEVICE, kernel_backend=backend)
    prompts = _prompts([6, 3], loaded.vocab_size)
    schedule = [("decode", 1), ("paged_prefill", 2), ("decode", 1)]
    continuations = _prompts([sum(n for _, n in schedule)] * 2, loaded.vocab_size, seed=3)
    full = [p + c for p, c in zip(prompts, continuations)]
    expected = [hf_logits(reference, seq) for seq in full]

    paged = PagedSequences(loaded.model, len(prompts), max(map(len, full)))
    steps = [("prefill", [len(p) for p in prompts])] + [(mode, [n] * len(full)) for mode, n in schedule]
    for mode, counts in steps:
        start = list(paged.lengths)
        outputs = paged.step(mode, [seq[s : s + n] for seq, s, n in zip(full, start, counts)])
        for b, logits in enumerate(outputs):
            torch.testing.assert_close(logits, expected[b][start[b] : paged.lengths[b]], atol=TOL, rtol=0)


def test_model_shape_attributes(checkpoints):
    loaded = load_model(checkpoints["mistral"][0])
    model = loaded.model
    assert (model.num_layers, model.num_kv_heads, model.head_dim) == (2, 2, 32)
    layers = model.attention_layers()
    assert len(layers) == 2 and all(layer.num_heads == 4 for layer in layers)
    assert loaded.max_positions == 64  # capped by the sliding window


@pytest.mark.parametrize(
    "family, overrides, message",
    [
        ("llama", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "rope_type must be one of"),
        ("llama", {"hidden_act": "gelu"}, "hidden_act must be 'silu'"),
        ("gpt2", {"activation_function": "silu"}, "activation_function must be one of"),
    ],
)
def test_unsupported_config_fails_at_load(tmp_path, family, overrides, message):
    with pytest.raises(ValueError, match=message):
        load_model(MAKERS[family](tmp_path, **overrides))
