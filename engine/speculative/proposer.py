"""How many tokens to draft this step: k as configured, or adaptively (k = 0 included).

Adaptive choice. For B running requests, drafting k tokens each yields on average
B * E(k) tokens per step, E(k) = 1 + sum_{j<k} r_j, where r_j is the measured probability
that slot j is accepted (accepted / drafted at j; counts decay by DECAY a step, so they
follow the workload). A step's wall time, from scheduling to its outputs, is modelled as
    c_step + c_row * verify rows + c_draft * draft forwards + c_draft_row * draft rows
fitted by decayed least squares to every measured step (the drafter's cost_plan gives the
forwards and rows a candidate k would cost; a plain step has none). The proposer picks the k in [0, K]
with the most tokens per second. The fixed terms carry what a drafting step adds besides
FLOPs (the draft model's launches, the verifier, emitting several tokens a request).
This is where batch size enters: at small batch the fixed cost dominates, extra verify
rows are nearly free and E(k) wins; as the batch grows the per-row cost takes over, a step
with k drafts costs up to (k + 1) times a plain one, and the choice falls to small k or none.

The first WARMUP steps cycle k over (K, 0, K / 2, 1) so that every term and every slot's
acceptance are measured. Afterwards the proposer keeps the estimates fresh by trying the
next of those values other than the current best, after EXPLORE_EVERY steps times how much
slower the model predicts it to be (at most MAX_EXPLORE_SPACING times): a try that looks
costly is made rarely.
"""
import numpy as np

DECAY = 0.98
WARMUP = 12
EXPLORE_EVERY = 20
MAX_EXPLORE_SPACING = 10
FEATURES = 4  # 1, verify rows, draft forwards, draft rows


class LinearCost:
    """seconds ~ c . features, c >= 0, by decayed ridge least squares."""

    def __init__(self, size: int = FEATURES):
        self.gram = np.zeros((size, size))
        self.moment = np.zeros(size)

    def observe(self, features, seconds: float) -> None:
        x = np.asarray(features, dtype=np.float64)
        self.gram = DECAY * self.gram + np.outer(x, x)
        self.moment = DECAY * self.moment + x * seconds

    def coefficients(self) -> np.ndarray:
        size = len(self.moment)
        ridge = 1e-6 * np.diag(np.diag(self.gram)) + 1e-12 * np.eye(size)
        return np.clip(np.linalg.solve(self.gram + ridge, self.moment), 0, None)


def step_features(verify_rows: int, draft_forwards: int, draft_rows: int) -> tuple:
    return 1, verify_rows, draft_forwards, draft_rows


class Proposer:
    def __init__(self, spec, drafter):
        self.k = spec.num_speculative_tokens
        self.adaptive = spec.adaptive
        self.drafter = drafter
        self.drafted = np.zeros(self.k)
        self.accepted = np.zeros(self.k)
        self.cost = LinearCost()
        self.explore = list(dict.fromkeys([self.k, 0, max(1, self.k // 2), 1]))
        self.steps = 0
        self.explored = 0  # explorations after the warm-up
        self.since_explore = 0

    def choose(self, upcoming) -> int:
        """k for the next step; upcoming() lists the requests it will likely run."""
        if not self.adaptive:
            return self.k
        self.steps += 1
        if self.steps <= WARMUP:
            return self.explore[(self.steps - 1) % len(self.explore)]
        rates = self.rates(upcoming())
        best = int(np.argmax(rates))
        others = [e for e in self.explore if e != best]
        candidate = others[self.explored % len(others)]
        # a try costs what the candidate loses against the best: the worse it looks, the rarer
        self.since_explore += 1
        if self.since_explore >= EXPLORE_EVERY * min(MAX_EXPLORE_SPACING, rates[best] / max(rates[candidate], 1e-9)):
            self.explored, self.since_explore = self.explored + 1, 0
            return candidate
        return best

    def expected_tokens(self) -> np.ndarray:
        """E(k) for k = 0..K: 1 + the summed acceptance of slots 0..k-1."""
        rates = np.divide(self.accepted, self.drafted, out=np.zeros(self.k), where=self.drafted > 0)
        return 1.0 + np.concatenate([[0.0], np.cumsum(rates)])

    def best(self, running) -> int:
        return int(np.argmax(self.rates(running)))

    def rates(self, running) -> np.ndarray:
        """Predicted tokens per second of each k in [0, K] for these requests."""
        batch = max(1, len(running))
        planned = self.drafter.cost_plan(running)
        features = np.array([step_features(batch * (k + 1), *(planned(k) if k else (0, 0)))
                             for k in range(self.k + 1)], dtype=np.float64)
        seconds = np.maximum(features @ self.cost.coefficients(), 1e-9)
        return batch * self.expected_tokens() / seconds

    def observe(self, features, seconds: float, outcomes: list[tuple[int, int]]) -> None:
        """After a step: its step_features, its wall time and (drafted, accepted) per request."""
        if not self.adaptive:
            return
        self.cost.observe(features, seconds)
        self.drafted *= DECAY
        self.accepted *= DECAY
        for drafted, accepted in outcomes:
            self.drafted[:drafted] += 1
            self.accepted[:accepted] += 1
