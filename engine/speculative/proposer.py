"""How many tokens to draft this step: k as configured, or adaptively (k = 0 included).

Adaptive choice. For B running requests, drafting k tokens each yields on average
B * E(k) tokens per step, E(k) = 1 + sum_{j<k} r_j, where r_j is the measured probability
that slot j is accepted (accepted / drafted at j; counts decay by DECAY a step, so they
follow the workload). The step costs the draft model's work plus the target's verify
forward; each is modelled as time = c_forward * forwards + c_token * tokens, fitted by
decayed least squares to the measured wall time of every step (the drafter reports the
forwards and tokens it ran, and plans them for a candidate k). The proposer picks the k
in [0, K] with the most tokens per second, with k = 0 costing one plain forward.
This is where batch size enters: at small batch the forward's fixed cost (weights read,
launches, host work) dominates, extra verify rows are nearly free and E(k) wins; as the
batch grows the per-token cost takes over, a step with k drafts costs up to (k + 1) times
a plain one, and the choice falls to small k or none.

The first WARMUP steps cycle k over EXPLORE (K, 0, K / 2, 1) so that both cost terms and
every slot's acceptance are measured; afterwards every EXPLORE_EVERY-th step tries the
next of those values other than the current best, keeping the estimates fresh.
"""
import numpy as np

DECAY = 0.98
WARMUP = 12
EXPLORE_EVERY = 8


class LinearCost:
    """time ~ c . (forwards, tokens), c >= 0, by decayed ridge least squares."""

    def __init__(self):
        self.gram = np.zeros((2, 2))
        self.moment = np.zeros(2)

    def observe(self, forwards: int, tokens: int, seconds: float) -> None:
        x = np.array([forwards, tokens], dtype=np.float64)
        self.gram = DECAY * self.gram + np.outer(x, x)
        self.moment = DECAY * self.moment + x * seconds

    def predict(self, forwards: int, tokens: int) -> float:
        ridge = 1e-6 * np.diag(np.diag(self.gram)) + 1e-12 * np.eye(2)
        coef = np.clip(np.linalg.solve(self.gram + ridge, self.moment), 0, None)
        return float(coef @ np.array([forwards, tokens], dtype=np.float64))


class Proposer:
    def __init__(self, spec, drafter):
        self.k = spec.num_speculative_tokens
        self.adaptive = spec.adaptive
        self.drafter = drafter
        self.drafted = np.zeros(self.k)
        self.accepted = np.zeros(self.k)
        self.draft_cost, self.verify_cost = LinearCost(), LinearCost()
        self.explore = list(dict.fromkeys([self.k, 0, max(1, self.k // 2), 1]))
        self.steps = 0
        self.last_choice = self.k

    def choose(self, running) -> int:
        """k for the next step, given the running requests."""
        if not self.adaptive:
            return self.k
        self.steps += 1
        if self.steps <= WARMUP:
            k = self.explore[(self.steps - 1) % len(self.explore)]
        else:
            k = self.best(running)
            if self.steps % EXPLORE_EVERY == 0:
                others = [e for e in self.explore if e != k]
                k = others[(self.steps // EXPLORE_EVERY) % len(others)]
        self.last_choice = k
        return k

    def expected_tokens(self, k: int) -> float:
        rates = np.divide(self.accepted, self.drafted, out=np.zeros(self.k), where=self.drafted > 0)
        return 1.0 + float(rates[:k].sum())

    def best(self, running) -> int:
        batch = max(1, len(running))
        rates = []
        for k in range(self.k + 1):
            seconds = self.verify_cost.predict(1, batch * (k + 1))
            if k:
                seconds += self.draft_cost.predict(*self.drafter.planned_cost(running, k))
            rates.append(batch * self.expected_tokens(k) / max(seconds, 1e-9))
        return int(np.argmax(rates))

    def observe(self, draft: tuple[int, int], draft_seconds: float, verify_tokens: int, verify_seconds: float,
                outcomes: list[tuple[int, int]]) -> None:
        """After a step: the draft work (forwards, tokens) and time, the verify forward's tokens
        and time, and (drafted, accepted) per request."""
        if not self.adaptive:
            return
        if draft[0]:
            self.draft_cost.observe(*draft, draft_seconds)
        self.verify_cost.observe(1, verify_tokens, verify_seconds)
        self.drafted *= DECAY
        self.accepted *= DECAY
        for drafted, accepted in outcomes:
            self.drafted[:drafted] += 1
            self.accepted[:accepted] += 1
