"""The two ways a budget steers γ after each factor step; each writes γ only through
:func:`sss.optim.set_penalty_scale` (docs/design.md, "budgets")."""

from __future__ import annotations

import torch
from torch import nn

from sss.budget.ranking import Ranking
from sss.budget.targets import Target
from sss.optim.penalty import set_penalty_scale


class DoublingSteering:
    """From scratch: while the estimate is above the target, a multiplier on every γ doubles every
    20 steps; at or under it the penalty is off (γ = 0) and the multiplier halves every 10 steps,
    so the loss gradient can lift factors off zero again. Factors are absolute: no hold at 1."""

    relative_factors = False

    def __init__(self) -> None:
        self.scale = 1.0

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, est: float, step: int, target: Target,
             ranking: Ranking) -> None:  # fmt: skip
        """Updates γ after factor step ``step``, at the estimated cost ``est``."""
        above = est > target.value
        self.scale = min(1e3, self.scale * 2 ** (1 / 20)) if above else max(1e-3, self.scale * 2 ** (-1 / 10))
        set_penalty_scale(optimizer, self.scale if above else 0.0)


class DistanceSteering:
    """From trained weights: γ in units of the learning rate, from the factors' distance to zero.
    The estimate follows a cubic path from dense to the target over the first 80% of the
    selection (Zhu & Gupta's gradual schedule: fast early, slow late, then still), and each
    step's threshold lr·γ is a tenth of the ``|λ|`` of the structure at the path's current edge:
    the structures below it reach zero over the next ten steps or so, and the others, held at
    their gate's largest (``relative_factors``), keep their ranking while the data moves them. No
    multiplier winds up at a small lr; structures cross zero a few at a time, weakest first,
    while the weights adapt; at or under the path γ is 0, so the loss can lift factors back.

    Args:
        selection_steps: Factor steps until the selection ends.
    """

    relative_factors = True

    def __init__(self, selection_steps: int) -> None:
        self.selection_steps, self.scale, self.bias = selection_steps, 1.0, 1.0

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, est: float, step: int, target: Target,
             ranking: Ranking) -> None:  # fmt: skip
        """Updates γ after factor step ``step``, at the estimated cost ``est``."""
        if step % 20 == 1:  # the estimate is additive, channel costs are not: correct it
            self.bias = target.exact(model) / max(est, 1e-9)
        est *= self.bias
        span = max(1, int(0.8 * self.selection_steps))
        goal = target.value + (target.dense - target.value) * (1 - min(step / span, 1.0)) ** 3
        edge = ranking.boundary(model, est, goal, self.bias) / 10 if est > goal else 0.0
        set_penalty_scale(optimizer, edge, threshold=True)
