"""The sweep's reference decoder (benchmarks/decoding.py) gives the engine's outputs, and every
request of a run draws with its own seed."""
import pytest
import torch

from benchmarks import decoding
from benchmarks.decode_configs import DecodeConfig, request_seeds
from benchmarks.engine_decode import engine_decode
from benchmarks.language import ReferenceLanguage
from benchmarks.objectives import MODELS, SpecialIds
from engine import LLM
from tests.tiny_experiment import make_experiment_model

PROMPTS = [[7 + i, 9 + i, 11] for i in range(6)]


@pytest.fixture(scope="module")
def lang():
    return ReferenceLanguage()


@pytest.fixture(scope="module")
def masked(lang, tmp_path_factory):
    model, path = make_experiment_model("cmlm-bert", tmp_path_factory.mktemp("cmlm"), lang)
    return model, LLM(path, device="cpu")


@pytest.fixture(scope="module")
def causal(lang, tmp_path_factory):
    model, path = make_experiment_model("ar-gpt2", tmp_path_factory.mktemp("ar"), lang)
    return model, LLM(path, device="cpu")


@pytest.mark.parametrize("config", [DecodeConfig("T=4", "mp", passes=4), DecodeConfig("T=N", "mp"),
                                    DecodeConfig("L2R", "l2r"), DecodeConfig("T=3 sampled", "mp", 1.0, 3)],
                         ids=lambda c: c.name)
def test_mask_predict_decoder_equals_the_engine(masked, config):
    model, llm = masked
    ids = SpecialIds.of(len(llm.tokenizer))
    seeds = request_seeds(1, len(PROMPTS))
    frames = decoding.predict_frames(model, PROMPTS, ids, llm.tokenizer.all_special_ids, config.temperature, seeds)
    ours = decoding.mask_predict(model, PROMPTS, frames, [config.mp_params(n) for n in frames], ids,
                                 llm.tokenizer.all_special_ids, seeds)
    theirs, _ = engine_decode(llm, MODELS["cmlm-bert"], config, PROMPTS, seeds)
    assert [o.frame for o in theirs] == frames
    assert [o.tokens for o in ours] == [o.token_ids for o in theirs]



@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_causal_decoder_equals_the_engine(causal, temperature):
    model, llm = causal
    ids = SpecialIds.of(len(llm.tokenizer))
    seeds = request_seeds(2, len(PROMPTS))
    ours = decoding.generate_causal(model, PROMPTS, ids, temperature, seeds, max_tokens=12)
    theirs = llm.generate([[ids.bos, *p] for p in PROMPTS],
                          [DecodeConfig("AR", "ar", temperature).ar_params(12, s) for s in seeds])
    for o, t in zip(ours, theirs):
        assert t.token_ids[:len(o.tokens)] == o.tokens


def test_every_request_draws_with_its_own_seed(masked):
    """Identical prompts sampled in one run differ (a seed per request); the same seeds repeat."""
    model, llm = masked
    config = DecodeConfig("sampled", "mp", 1.0, 4)
    prompts = [[7, 9, 11]] * 16
    seeds = request_seeds(0, len(prompts))
    assert len(set(seeds)) == len(seeds) and request_seeds(1, 16)[0] not in seeds
    first, _ = engine_decode(llm, MODELS["cmlm-bert"], config, prompts, seeds)
    again, _ = engine_decode(llm, MODELS["cmlm-bert"], config, prompts, seeds)
    assert [o.token_ids for o in first] == [o.token_ids for o in again]
    assert len({tuple(o.token_ids) for o in first}) > 4
    with torch.no_grad():
        ids = SpecialIds.of(len(llm.tokenizer))
        ours = decoding.generate_causal(model.__class__(model.size, model.vocab_size, True).eval(), prompts, ids,
                                        1.0, seeds, max_tokens=6)
    assert len({tuple(o.tokens) for o in ours}) > 4
