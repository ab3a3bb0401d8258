"""One trained model's numbers for the sweep: likelihood gaps to the grammar's floor, and the
quality of its decoded continuations.

Likelihood (benchmarks/likelihood.py), per token of held-out answers (words + `<eos>`), each
beside its exact floor:
- causal next-token model: -log q(answer | prompt);
- framed models: the left-to-right any-order NLL in the answer's frame, plus (bidirectional
  models) the length head's -log q(frame size | prompt), so the total is a likelihood of the
  answer given the prompt like the causal model's; the random-order any-order NLL (the
  masked-diffusion ELBO, estimated on fixed random masks); the single-mask loss against the
  exact Bayes optimum.

Quality (benchmarks/quality.py `language_scores`) of continuations of held-out prompts, one
seed per request: the causal next-token model greedy and sampled at temperature 1; framed
models by mask-predict (low-confidence re-masking) with T = 1, 4 and N passes (N = the frame's
slots: one token per pass), and left to right one slot per pass (greedy and sampled at
temperature 1: the masked model used as an autoregressive one). Bidirectional models first ask
their length head for the frame (greedy, or sampled for the sampled configuration); causal ones
cannot see the frame and always fill the largest.
"""
import time
from dataclasses import replace

import numpy as np

from benchmarks import decoding, likelihood
from benchmarks.corpus import heldout_pairs, ids_to_text
from benchmarks.decode_configs import SWEEP_AR, SWEEP_FRAMED, DecodeConfig, request_seeds
from benchmarks.frame import MAX_SLOTS, answer_slots
from benchmarks.objectives import MODELS, SpecialIds, frame_fits
from benchmarks.quality import language_scores

PAIRS_SEED = 2_000_003  # held-out (prompt, answer) pairs: neither training nor train.py's held-out


def eval_pairs(lang, n, context):
    return heldout_pairs(lang, n, PAIRS_SEED, fits=lambda k, a: frame_fits(k, a, context))


def likelihood_report(model, spec, lang, pairs, ids, context, heldout_uniform=None):
    """Per-token NLLs and floors of `pairs` (dict of {"model", "floor", "gap"} entries)."""
    tokens = likelihood.answer_tokens(pairs).sum()

    def entry(model_totals, floor_totals):
        m, f = float(np.sum(model_totals) / tokens), float(np.sum(floor_totals) / tokens)
        return {"model": m, "floor": f, "gap": m - f}

    if not spec.framed:
        return {"nll": entry(likelihood.causal_nll(model, pairs, ids),
                             likelihood.conditional_floor(lang, spec, pairs, context))}
    out = {}
    ltr = likelihood.left_to_right_nll(model, pairs, ids)
    if spec.length_head:
        head = likelihood.length_head_nll(model, pairs, ids)
        out["length_head"] = {"model": float(head.mean()),
                              "floor": float(likelihood.length_floor(lang, pairs, context).mean())}
        out["length_head"]["gap"] = out["length_head"]["model"] - out["length_head"]["floor"]
        unconditional = replace(spec, causal=True)  # what a model without the frame conditions on
        out["nll"] = entry(ltr + head, likelihood.conditional_floor(lang, unconditional, pairs, context))
        out["left_to_right_given_frame"] = entry(ltr, likelihood.conditional_floor(lang, spec, pairs, context))
    else:
        out["nll"] = entry(ltr, likelihood.conditional_floor(lang, spec, pairs, context))
    if heldout_uniform is not None:
        loss, _ = heldout_uniform.losses(model)
        out["random_order_nll"] = {"model": loss, "floor": heldout_uniform.floor, "gap": loss - heldout_uniform.floor}
    single, bayes = likelihood.single_mask_loss(model, lang, pairs, ids, context)
    out["single_mask"] = {"model": float(single.mean()), "floor": float(bayes.mean()),
                          "gap": float(single.mean() - bayes.mean())}
    return out


def decode_configs(spec):
    """The configurations a model is decoded with in the sweep."""
    return SWEEP_FRAMED if spec.framed else SWEEP_AR


def decode(model, spec, prompts, ids, special_ids, config: DecodeConfig, seeds, oracle_frames=None):
    """Decoded outputs of one configuration, by the reference decoder (benchmarks/decoding.py)."""
    if config.kind == "ar":
        return decoding.generate_causal(model, prompts, ids, config.temperature, seeds)
    if config.oracle_frame:
        frames = oracle_frames
    elif spec.length_head:
        frames = decoding.predict_frames(model, prompts, ids, special_ids, config.temperature, seeds)
    else:
        frames = [MAX_SLOTS] * len(prompts)
    params = [config.mp_params(n) for n in frames]
    outs = decoding.mask_predict(model, prompts, frames, params, ids, special_ids, seeds, text_only=True)
    if spec.length_head and not config.oracle_frame:
        for o in outs:
            o.passes += 1  # the length head's pass
    return outs


def quality_report(model, spec, lang, pairs, ids, special_ids, seed=0, configs=None):
    """language_scores of every decode configuration, with mean passes and decode seconds."""
    prompts = [p for p, _ in pairs]
    prompt_texts = [ids_to_text(lang, p) for p in prompts]
    references = [ids_to_text(lang, a) for _, a in pairs]
    oracle = [answer_slots(len(a)) for _, a in pairs]
    seeds = request_seeds(seed, len(pairs))
    rows = {}
    for config in configs or decode_configs(spec):
        start = time.perf_counter()
        outs = decode(model, spec, prompts, ids, special_ids.ids, config, seeds, oracle)
        seconds = time.perf_counter() - start
        texts = [" ".join(special_ids.vocabulary[t] for t in o.words) for o in outs]
        row = language_scores(lang, prompt_texts, texts, references)
        row.update(mean_passes=float(np.mean([o.passes for o in outs])), seconds=seconds)
        rows[config.name] = row
    return rows


def evaluate_model(model, model_name, lang, tokenizer, pairs, context, heldout_uniform=None, seed=0):
    """{"likelihood": ..., "quality": ...} of one model on held-out `pairs`."""
    spec = MODELS[model_name]
    ids = SpecialIds.of(len(tokenizer))
    specials = SpecialVocabulary(tokenizer)
    return {"likelihood": likelihood_report(model, spec, lang, pairs, ids, context, heldout_uniform),
            "quality": quality_report(model, spec, lang, pairs, ids, specials, seed)}


class SpecialVocabulary:
    """The tokenizer's special ids and its id -> token list (texts as the engine renders them)."""

    def __init__(self, tokenizer):
        self.ids = list(tokenizer.all_special_ids)
        self.vocabulary = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
