"""Aiming the selection at a budget (MACs, parameters or latency) instead of a γ.

Two parts (docs/design.md, "budgets"):

1. **Steering.** After every factor step the cost of the current zero pattern is estimated from
   per-structure costs measured once (:func:`sss.measure.structure_costs`; a structure inside a
   zero block is not counted twice), and γ is set from it (:mod:`sss.budget.steering`: a
   doubling multiplier from scratch, the factors' distance to zero from trained weights). The
   proximal step stays the only thing that makes zeros, so the zeros stay exact.
2. **Landing** (:mod:`sss.budget.landing`). Where the selection ends (the freeze, or the end of
   training), the exact cost is counted on the pruned model. Outside the band around the target,
   the nearest structures are moved across: the smallest non-zero factors are set to zero (too
   expensive), or the most recently zeroed ones come back (too cheap), never past the other edge
   of the band, recounting exactly. The model that is then pruned is the gated model as it
   stands, so the removal is exact.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from sss.budget.landing import land
from sss.budget.ranking import Ranking, gate_prices
from sss.budget.steering import DistanceSteering, DoublingSteering
from sss.budget.targets import LATENCY_NOISE, Target, create_target
from sss.measure import structure_costs
from sss.measure.latency_model import LatencyModel
from sss.structures import gates
from sss.structures.gate import factors_restored
from sss.structures.prune import prune


def dense_architecture(model: nn.Module) -> nn.Module:
    """The plain model with every structure kept (``model`` is unchanged), the reference a
    relative latency target is timed against."""
    with factors_restored(model) as refs:
        for ref in refs:
            ref.weight.fill_(1.0)
        return copy.deepcopy(prune(model)).to(memory_format=torch.contiguous_format)


class BudgetController:
    """Steers γ toward a MACs, parameter or latency target and lands the selection inside its
    band: a :class:`~sss.budget.targets.Target` built once, one of the two steerings (by
    distance when ``selection_steps`` is given: :class:`~sss.budget.steering.DistanceSteering`,
    else :class:`~sss.budget.steering.DoublingSteering`), and one
    :class:`~sss.budget.ranking.Ranking` that the steering and the landing read. It sets γ only
    through :func:`sss.optim.set_penalty_scale`; steered by distance, the factors want no
    momentum: build them with ``build_optimizers(steered_by_distance=True)``.

    Raises:
        ValueError: the target does not read, or is out of the model's reach
            (:func:`~sss.budget.targets.create_target`).
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, metric: str, target: float | str,
                 optimizer: torch.optim.Optimizer, *, round_to: int = 1, tolerance: float = 0.02,
                 latency: LatencyModel | None = None, selection_steps: int | None = None) -> None:  # fmt: skip
        self.latency = latency
        self.target: Target = create_target(model, example, metric, target, round_to=round_to, tolerance=tolerance,
                                            latency=latency)  # fmt: skip
        self.steering = DoublingSteering() if selection_steps is None else DistanceSteering(selection_steps)
        costs = structure_costs(model, example, self.target.cost)
        prices = gate_prices(model, optimizer, relative=self.steering.relative_factors)
        self.ranking = Ranking(model, costs, self.target.dense, prices)
        self.step_count = 0

    def collapse_advice(self, compact: nn.Module) -> str:
        """What to change when the selection cut every path from input to output while steered
        here: near the target, the target (too small for this model to keep a path); far above
        it, the learning rate (γ is the controller's, so "lower γ" would change nothing)."""
        t = self.target
        cost, target = t.cost(compact), t.format(t.value)
        if cost > t.bounds[1] * 1.25:
            return f"γ is steered toward target_{t.metric} {target}, so lower lr"
        return (f"target_{t.metric} {target} ({t.value / t.dense:.1%} of dense) is too small for this model: "
                f"at {t.format(cost)} no path from input to output is left. Aim higher: the smallest it shrinks to "
                f"is {t.format(t.floor)} ({t.floor / t.dense:.1%} of dense, every factor zero) and a "
                "working path takes more")  # fmt: skip

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> float:
        """Updates γ after one factor step; returns the estimated cost."""
        self.step_count += 1
        refs = gates(model)  # one walk of the model per step
        self.ranking.record(refs, self.step_count)
        est = self.ranking.estimate(model, refs)
        self.steering.step(model, optimizer, est, self.step_count, self.target, self.ranking)
        return est

    def land(self, model: nn.Module) -> tuple[float, list[str]]:
        """Moves the fewest structures across so that the exact cost is within the band; returns
        the exact cost and a log line (:func:`sss.budget.landing.land`)."""
        return land(self.target, self.ranking, model)

    @torch.no_grad()
    def land_measured(self, model: nn.Module, measure: Callable[[nn.Module], float], tries: int = 3) -> list[str]:
        """A latency target: :meth:`land` on the prediction, then time the compact model; while the
        timing is over the target by more than :data:`LATENCY_NOISE`, aim the prediction lower by
        the ratio and land again. Returns the log lines."""
        goal, aim = self.target.value, self.target
        lines = land(aim, self.ranking, model)[1]
        for attempt in range(tries):
            measured = measure(prune(model, round_to=aim.round_to))
            lines.append(f"budget: measured {measured:.2f} ms against the target {goal:.2f} ms")
            if measured <= goal * (1 + LATENCY_NOISE) or attempt == tries - 1:
                if measured > goal * (1 + LATENCY_NOISE):
                    lines.append(f"budget: latency target NOT reached: the compact model times {measured:.2f} ms")
                return lines
            aim = aim.aimed_at(aim.value * goal / measured)  # the prediction is optimistic on this machine: aim lower
            lines += land(aim, self.ranking, model)[1]
        return lines

    def state(self) -> dict:
        return {"scale": self.steering.scale, "bias": getattr(self.steering, "bias", 1.0), "step": self.step_count,
                "last_nonzero": self.ranking.last_nonzero,
                "costs": self.ranking.costs, "dense": self.ranking.dense,
                "coefficients": self.latency.coefficients if self.latency is not None else None}  # fmt: skip

    def load_state(self, state: dict) -> None:
        self.steering.scale, self.step_count = state["scale"], state["step"]
        if hasattr(self.steering, "bias"):  # the estimate's correction, renewed every 20 steps: kept between
            self.steering.bias = state.get("bias", 1.0)
        self.ranking.last_nonzero = dict(state["last_nonzero"])
        if "costs" in state:  # the costs this run started with (a latency model's differ per calibration)
            self.ranking.costs, self.ranking.dense = dict(state["costs"]), state["dense"]
            if state.get("coefficients") is not None and self.latency is not None:
                self.latency.coefficients = list(state["coefficients"])
