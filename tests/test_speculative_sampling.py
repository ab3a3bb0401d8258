"""Speculative sampling is lossless: what it emits is distributed exactly as the target's
sampler, checked by chi-square tests over many seeded draws on a tiny vocabulary. Each test
also runs a wrong rule (the residual replaced by p, or every draft accepted) to show that
the same test detects it."""
import pytest
import torch

from engine import LLM, SamplingParams
from engine.speculative import rejection
from engine.speculative.rejection import draw, rejection_sample, sampling_probs
from tests.tiny_causal import hf_model
from tests.tiny_speculative import make_causal, make_masked, make_truncated

VOCAB = 16
PROMPT = [7, 8, 9]
NUM_DRAWS = 2000


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of observed counts against probabilities; cells expecting < 5 are pooled."""
    expected = probs.double() * counts.sum()
    small = expected < 5
    observed = torch.cat([counts[~small].double(), counts[small].double().sum()[None]])
    expected = torch.cat([expected[~small], expected[small].sum()[None]])
    keep = expected > 0
    assert bool((observed[~keep] == 0).all()), "a draw outside the support"
    observed, expected = observed[keep], expected[keep]
    statistic = ((observed - expected) ** 2 / expected).sum()
    dof = len(observed) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), statistic / 2))


WRONG_RULES = {
    "residual is p": ("residual_distribution", lambda p, q: p),
    "always accept": ("uniforms", lambda seeds: torch.zeros(len(seeds))),
}


def _rule_draws(p, q, n):
    seeds = torch.arange(3 * n, dtype=torch.int64).view(3, n) * 7919
    rows_p, rows_q = p.expand(n, -1), q.expand(n, -1)
    drafts = draw(rows_q, seeds[0])
    accepted, residual = rejection_sample(rows_p, rows_q, drafts, seeds[1], seeds[2])
    return torch.where(accepted, drafts, residual)


def test_rejection_rule_reproduces_the_target_distribution(monkeypatch):
    p = torch.tensor([0.4, 0.3, 0.2, 0.1, 0.0, 0.0])
    q = torch.tensor([0.1, 0.1, 0.2, 0.3, 0.2, 0.1])  # mass where p has none, and the reverse
    n = 20000
    counts = torch.bincount(_rule_draws(p, q, n), minlength=6)
    assert chi_square_p_value(counts, p) > 1e-3
    for name, replacement in WRONG_RULES.values():
        with monkeypatch.context() as m:
            m.setattr(rejection, name, replacement)
            wrong = torch.bincount(_rule_draws(p, q, n), minlength=6)
        assert chi_square_p_value(wrong, p) < 1e-9, name


# ---- end to end: the engine's first two sampled tokens against the target's exact joint law

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec-sampling")
    target = make_causal(root, "target", vocab_size=VOCAB, init_std=0.3)
    return {"target": target, "masked": make_masked(root, "masked", vocab_size=VOCAB, seed=1),
            "causal": make_truncated(target, root, "truncated")}


def exact_joint(target, params) -> torch.Tensor:
    """P(x1, x2 | PROMPT) under the target's sampling distribution, [V * V]."""
    model = hf_model(target)
    row = lambda logits: sampling_probs(  # noqa: E731
        logits, torch.full((len(logits),), params.temperature), torch.full((len(logits),), params.top_k),
        torch.full((len(logits),), params.top_p))
    with torch.no_grad():
        first = row(model(torch.tensor([PROMPT])).logits[0, -1:].float())[0]
        ids = torch.tensor([PROMPT + [x] for x in range(VOCAB)])
        second = row(model(ids).logits[:, -1].float())
    return (first[:, None] * second).flatten()


def engine_joint(llm, params) -> torch.Tensor:
    runs = [SamplingParams(**{**params.__dict__, "seed": seed}) for seed in range(NUM_DRAWS)]
    outs = llm.generate([PROMPT] * NUM_DRAWS, runs)
    pairs = torch.tensor([o.token_ids[:2] for o in outs])
    return torch.bincount(pairs[:, 0] * VOCAB + pairs[:, 1], minlength=VOCAB * VOCAB)


SAMPLING = {
    "t1": SamplingParams(temperature=1.0, max_tokens=3, ignore_eos=True),
    "t0.7-top4": SamplingParams(temperature=0.7, top_k=4, max_tokens=3, ignore_eos=True),
}


@pytest.mark.parametrize("draft", ["masked", "causal"])
@pytest.mark.parametrize("setting", list(SAMPLING))
def test_engine_samples_the_target_distribution(models, draft, setting, monkeypatch):
    params = SAMPLING[setting]
    spec = {"model": models[draft], "num_speculative_tokens": 2}
    llm = LLM(models["target"], max_num_seqs=512, num_kv_blocks=2048, block_size=4, speculative_config=spec)
    exact = exact_joint(models["target"], params)
    assert chi_square_p_value(engine_joint(llm, params), exact) > 1e-3
    stats = llm.engine.stats()["speculative"]
    assert 0 < stats["num_accepted"] < stats["num_drafted"]  # both branches of the rule ran
    with monkeypatch.context() as m:
        m.setattr(rejection, "residual_distribution", WRONG_RULES["residual is p"][1])
        assert chi_square_p_value(engine_joint(llm, params), exact) < 1e-6


def test_seeded_draws_do_not_depend_on_the_batch(models):
    """A seeded request emits the same tokens alone and among others (k fixed)."""
    spec = {"model": models["masked"], "num_speculative_tokens": 3}
    llm = LLM(models["target"], num_kv_blocks=256, block_size=4, speculative_config=spec)
    params = SamplingParams(temperature=1.0, max_tokens=12, seed=1234, ignore_eos=True)
    alone = llm.generate([PROMPT], params)[0].token_ids
    crowd = [SamplingParams(temperature=0.9, max_tokens=9, seed=s, ignore_eos=True) for s in range(5)]
    prompts = [[3, 4], PROMPT, [9], PROMPT, [1, 2, 3, 4, 5], PROMPT, [2, 2]]
    together = llm.generate(prompts, [*crowd[:3], params, crowd[3], params, crowd[4]])
    assert together[3].token_ids == alone and together[5].token_ids == alone
