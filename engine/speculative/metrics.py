"""Speculative decoding's counters, per request (RequestMetrics.speculative) and per engine.

A verify step of a request that drafted d tokens and had a accepted adds 1 to num_steps,
d to num_drafted, a to num_accepted, 1 to drafted_per_position[j] for j < d and to
accepted_per_position[j] for j < a. The step emits a + 1 tokens (the accepted drafts and
the target's own token), so:
  mean_accepted_length     (num_accepted + num_steps) / num_steps, tokens per verify step
                           (EAGLE's tau; 1 without speculation, at most k + 1)
  acceptance_rate          num_accepted / num_drafted
  acceptance_per_position  accepted / drafted at each slot: the probability that slot j is
                           accepted when it is drafted (which needs slots 0..j-1 accepted)
"""
from dataclasses import dataclass, field


@dataclass
class SpeculativeMetrics:
    num_steps: int = 0
    num_drafted: int = 0
    num_accepted: int = 0
    drafted_per_position: list[int] = field(default_factory=list)
    accepted_per_position: list[int] = field(default_factory=list)

    def record(self, drafted: int, accepted: int) -> None:
        if not drafted:
            return
        self.num_steps += 1
        self.num_drafted += drafted
        self.num_accepted += accepted
        grow = drafted - len(self.drafted_per_position)
        if grow > 0:
            self.drafted_per_position += [0] * grow
            self.accepted_per_position += [0] * grow
        for j in range(drafted):
            self.drafted_per_position[j] += 1
        for j in range(accepted):
            self.accepted_per_position[j] += 1

    @property
    def mean_accepted_length(self) -> float | None:
        return None if not self.num_steps else (self.num_accepted + self.num_steps) / self.num_steps

    @property
    def acceptance_rate(self) -> float | None:
        return None if not self.num_drafted else self.num_accepted / self.num_drafted

    @property
    def acceptance_per_position(self) -> list[float]:
        return [a / d for a, d in zip(self.accepted_per_position, self.drafted_per_position)]

    def as_dict(self) -> dict:
        return {"num_steps": self.num_steps, "num_drafted": self.num_drafted, "num_accepted": self.num_accepted,
                "mean_accepted_length": self.mean_accepted_length, "acceptance_rate": self.acceptance_rate,
                "acceptance_per_position": self.acceptance_per_position}
