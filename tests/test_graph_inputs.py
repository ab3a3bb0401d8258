"""The CUDA-graph view of a decode step, checked on any device: padded batch rows and block
tables as wide as the longest context give the same logits and tokens as the eager step."""
import torch

from engine import LLM, SamplingParams
from engine.cuda_graphs import DecodeGraphs, graph_buckets
from engine.step_inputs import forward_logits
from tests.tiny_causal import make_llama


def test_buckets_step_by_eight():
    assert graph_buckets(1) == [1]
    assert graph_buckets(20) == [1, 2, 4, 8, 16, 20]
    assert graph_buckets(256)[:6] == [1, 2, 4, 8, 16, 24] and graph_buckets(256)[-1] == 256


@torch.inference_mode()
def test_padded_graph_inputs_give_the_eager_tokens(tmp_path):
    llm = LLM(make_llama(str(tmp_path / "llama")), kernel_backend="triton", block_size=4, num_kv_blocks=32)
    executor = llm.engine.executor
    for prompt in ([5, 6, 7], [10, 11, 12, 13, 14, 15], [30]):
        llm.engine.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
    llm.engine.step()  # the prefill
    batch = executor.scheduler.schedule()
    assert batch.is_decode and len(batch) == 3
    inputs = executor.runner.prepare(batch)
    eager_logits, eager_tokens = forward_logits(executor.runner.model, inputs)

    max_blocks = 16  # the model's whole context in blocks of 4: wider than any table here
    graphs = DecodeGraphs(executor.runner.model, torch.device("cpu"), max_batch=8, max_blocks_per_seq=max_blocks)
    padded = graphs.pad_inputs(inputs, graphs.bucket(3))
    assert padded.input_ids.shape[0] == 4 and padded.meta.block_tables.shape == (4, max_blocks)
    logits, tokens = forward_logits(executor.runner.model, padded)
    assert tokens[:3].tolist() == eager_tokens.tolist()
    torch.testing.assert_close(logits[:3], eager_logits, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(logits[3:]).all()  # the padding row stays finite
