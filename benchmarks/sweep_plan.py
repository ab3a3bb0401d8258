"""The sweep's points and the order they run in: the most informative first.

Stages, in order (each model of benchmarks/objectives.py at every point of a stage):
1. lr: the small size at LR_STEPS steps, each peak rate of LR_GRID (in order); the
   best held-out objective loss picks a model's rate for every later stage (a point with
   lr=None resolves to it), and the chosen run doubles as the budget-LR_STEPS point.
2. converged: the small size at the largest budget: the main comparison, and the bundled
   checkpoints (benchmarks/assets).
3. budgets: the small size at the other budgets (the compute axis).
4. scale: the tiny size, with its own short learning-rate sweep, at the budgets.
5. data: the small size at the largest budget on a repeated corpus instead of fresh sentences,
   for the causal next-token model and the bidirectional uniform-masking one (the seed's pair).
"""
from dataclasses import asdict, dataclass

from benchmarks.objectives import MODELS

LR_GRID = (3e-3, 1e-2, 1e-3, 3e-4)
LR_STEPS = 2000
CONVERGED_STEPS = 16000
OTHER_BUDGETS = (500, 6000)
DATA_MODELS = ("ar-gpt2", "cmlm-bert")
TINY_LR_GRID = (3e-3, 1e-2)
REPEATED_CORPUS = 50_000
STAGES = ("lr", "converged", "budgets", "scale", "data")


@dataclass(frozen=True)
class Point:
    stage: str
    model: str
    size: str
    steps: int
    lr: float | None  # None: the best rate of the lr stage for this model and size
    data: str = "fresh"

    @property
    def key(self):
        lr = "best" if self.lr is None else f"{self.lr:g}"
        return f"{self.model}_{self.size}_{self.steps}_lr{lr}_{self.data}"

    def as_dict(self):
        return asdict(self)


def plan():
    """Every point, in running order."""
    models = list(MODELS)
    points = [Point("lr", m, "small", LR_STEPS, lr) for lr in LR_GRID for m in models]
    points += [Point("converged", m, "small", CONVERGED_STEPS, None) for m in models]
    points += [Point("budgets", m, "small", steps, None) for steps in OTHER_BUDGETS for m in models]
    points += [Point("scale", m, "tiny", LR_STEPS, lr) for lr in TINY_LR_GRID for m in models]
    points += [Point("scale", m, "tiny", steps, None) for steps in (CONVERGED_STEPS, *OTHER_BUDGETS) for m in models]
    points += [Point("data", m, "small", CONVERGED_STEPS, None, "repeated") for m in DATA_MODELS]
    return points


def lr_candidates(point: Point):
    """The points whose best held-out loss decides `point`'s learning rate."""
    if point.lr is not None:
        return []
    grid = LR_GRID if point.size == "small" else TINY_LR_GRID
    return [Point("lr" if point.size == "small" else "scale", point.model, point.size, LR_STEPS, lr) for lr in grid]
