"""The engine's named ranges reach the profiler, and the NVTX switch is an engine option."""
import json

from engine import LLM, SamplingParams
from engine import profiling
from tests.tiny_causal import make_gpt2

AR_PHASES = {"schedule", "prepare_inputs", "forward", "sample", "outputs"}


def test_ar_phases_appear_in_a_trace(tmp_path):
    llm = LLM(make_gpt2(str(tmp_path / "gpt2")), num_kv_blocks=16, block_size=4)
    params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
    trace = tmp_path / "trace.json"
    with profiling.profile(str(trace)):
        llm.generate([[5, 6, 7]], params)
    names = {event.get("name") for event in json.loads(trace.read_text())["traceEvents"]}
    assert AR_PHASES <= names


def test_enable_nvtx_option_switches_the_ranges_on(tmp_path, monkeypatch):
    monkeypatch.setattr(profiling, "_nvtx", False)
    LLM(make_gpt2(str(tmp_path / "gpt2")), num_kv_blocks=16, block_size=4, enable_nvtx=True)
    assert profiling._nvtx
    with profiling.ranged("schedule"):  # on CPU the range is a profiler range only; it must not fail
        pass
