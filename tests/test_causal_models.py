"""The causal models against HF transformers: packed prefill, then paged-cache steps."""
import importlib.util

import pytest
import torch

import kernels
from engine.attention import AttentionMetadata
from engine.models.loader import load_model
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


def _missing_triton(names):
    modules = sorted({kernels._KERNEL_MODULES[n] for n in names})
    return [m for m in modules if importlib.util.find_spec(f"kernels.{m}") is None]


def cases(archs, triton_archs, kernel_names):
    """(arch, backend) pairs: every arch on "torch"; on "triton" (slow in the interpreter) only
    the archs that reach different kernel paths, skipped, naming the module, until it lands."""
    missing = _missing_triton(kernel_names)
    reason = f"Triton kernel modules not written yet: {', '.join(f'kernels/{m}.py' for m in missing)}"
    skip = pytest.mark.skipif(bool(missing), reason=reason)
    torch_cases = [pytest.param(arch, "torch") for arch in archs]
    return torch_cases + [pytest.param(arch, "triton", marks=skip) for arch in triton_archs]


MODEL_KERNELS = ("rms_norm", "layer_norm", "rotary_embedding", "silu_and_mul", "gelu")
PREFILL_KERNELS = MODEL_KERNELS + ("prefill_attention",)
CACHE_KERNELS = PREFILL_KERNELS + ("store_kv", "decode_attention", "paged_prefill_attention")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """arch -> (checkpoint folder, HF reference model), built once per module."""
    out = {}
    for arch, (family, overrides) in ARCHS.items():
        path = MAKERS[family](tmp_path_factory.mktemp(arch), **overrides)
        out[arch] = (path, hf_model(path))
    return out


def _prompts(lengths, vocab_size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (n,), generator=g).tolist() for n in lengths]


def _cu_seqlens(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


# Triton: GPT-2 (LayerNorm, GELU, MHA), Llama (GQA, llama3 rope), Mistral (head_dim 32).
@pytest.mark.parametrize("arch, backend", cases(list(ARCHS), ["gpt2", "llama", "mistral"], PREFILL_KERNELS))
def test_packed_prefill_matches_hf(checkpoints, arch, backend):
    path, reference = checkpoints[arch]
    loaded = load_model(path, kernel_backend=backend)
    lengths = [5, 1, 9]
    prompts = _prompts(lengths, loaded.vocab_size)
    ids = torch.tensor([t for p in prompts for t in p])
    positions = torch.cat([torch.arange(n) for n in lengths])
    cu = _cu_seqlens(lengths)
    with torch.no_grad():
        hidden = loaded.model(ids, positions, AttentionMetadata("prefill", cu, max(lengths)))
        logits = loaded.model.compute_logits(hidden)
    assert logits.dtype == torch.float32 and logits.shape == (sum(lengths), loaded.vocab_size)
    for b, prompt in enumerate(prompts):
        expected = hf_logits(reference, prompt)
        torch.testing.assert_close(logits[cu[b] : cu[b + 1]], expected, atol=TOL, rtol=0)


class PagedSequences:
    """Drives a model step by step over a small paged cache, as the runner will.

    Each sequence owns scattered blocks, so a wrong block-table lookup shows up.
    """

    def __init__(self, model, num_seqs, max_len):
        blocks_per_seq = -(-max_len // BLOCK_SIZE)
        num_blocks = num_seqs * blocks_per_seq
        layout = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(2))
        self.block_tables = layout.view(num_seqs, blocks_per_seq).to(torch.int32)
        for layer in model.attention_layers():
            shape = (num_blocks, BLOCK_SIZE, model.num_kv_heads, model.head_dim)
            layer.k_cache, layer.v_cache = torch.zeros(shape), torch.zeros(shape)
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
            mode, _cu_seqlens(counts), max(counts), slot_mapping=torch.tensor(slots),
            context_lens=torch.tensor(self.lengths, dtype=torch.int32), block_tables=self.block_tables,
        )
        ids = torch.tensor([t for tokens in new_tokens for t in tokens])
        with torch.no_grad():
            logits = self.model.compute_logits(self.model(ids, torch.tensor(positions), meta))
        return logits.split(counts)


@pytest.mark.parametrize("arch, backend", cases(["gpt2", "llama", "qwen2", "mistral"], ["gpt2", "mistral"], CACHE_KERNELS))
def test_cached_steps_match_hf(checkpoints, arch, backend):
    """Prefill, a decode step, a two-token paged-prefill chunk, another decode step."""
    path, reference = checkpoints[arch]
    loaded = load_model(path, kernel_backend=backend)
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
