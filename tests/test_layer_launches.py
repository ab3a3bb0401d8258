"""A Llama-family decoder layer's decode step on the triton backend launches at most three
non-GEMM kernels: rotary_store_kv, the decode attention and silu_and_mul. Each RMSNorm runs
inside the GEMM that follows it (rms_norm_linear), so no norm kernel is launched.

The launches are counted where every Triton kernel launch goes through (the `run` of the
JIT function class, or of the interpreter's stand-in on CPU), while each decoder layer runs
a decode step of a tiny model, so whatever a layer launches is seen, not a list of names.
"""
import pytest
import torch

from engine import LLM, SamplingParams
from kernels import norm_linear
from tests.kernel_launches import record_launches
from tests.tiny_causal import make_llama, make_qwen2

GEMM_KERNELS = {norm_linear._rms_norm_linear_kernel.fn.__name__}


def _record_decode_layers(monkeypatch, model, launches):
    """Per decoder layer, the kernel names it launched in each decode step."""
    per_layer = [[] for _ in model.layers]
    for index, layer in enumerate(model.layers):
        def forward(hidden, residual, positions, meta, rows=None, layer_forward=layer.forward, steps=per_layer[index]):
            start = len(launches)
            out = layer_forward(hidden, residual, positions, meta, rows)
            if meta.mode == "decode":
                steps.append(launches[start:])
            return out

        monkeypatch.setattr(layer, "forward", forward)
    return per_layer


@pytest.mark.parametrize("make", [make_llama, make_qwen2], ids=["llama", "qwen2 (qkv bias)"])
@torch.inference_mode()
def test_decode_step_launches_at_most_three_non_gemm_kernels(make, tmp_path, monkeypatch):
    llm = LLM(make(str(tmp_path)), kernel_backend="triton", block_size=4, num_kv_blocks=32)
    model = llm.engine.executor.runner.model
    # The tiny model serves 128 positions, so decode attention runs one partition per
    # sequence; a split step is one launch too (tests/kernels/test_decode_attention.py).
    launches = record_launches(monkeypatch)
    per_layer = _record_decode_layers(monkeypatch, model, launches)

    params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
    llm.generate([[5, 6, 7], [10, 11, 12, 13]], params)

    for steps in per_layer:
        assert len(steps) == 2  # two decode steps after the prefill
        for kernels_launched in steps:
            gemms = [name for name in kernels_launched if name in GEMM_KERNELS]
            others = [name for name in kernels_launched if name not in GEMM_KERNELS]
            assert len(gemms) == 2, kernels_launched  # input norm + qkv, post-attention norm + gate/up
            assert len(others) <= 3, kernels_launched
            assert not any("norm" in name for name in others), kernels_launched
