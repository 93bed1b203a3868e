"""Aiming the selection at a budget (MACs or parameters) instead of a γ.

Two parts (docs/design.md, "budgets"):

1. **Steering.** After every factor step the cost of the current zero pattern is estimated from
   per-structure costs measured once (:func:`sss.measure.structure_costs`; a structure inside a
   zero block is not counted twice). While it is above the target, a multiplier on every γ
   doubles every 20 steps; once it is at or below, the penalty is off (γ = 0) and the multiplier
   halves every 10 steps, so the loss gradient can lift factors off zero again. The proximal
   step stays the only thing that makes zeros, so the zeros stay exact.
2. **Landing.** Where the selection ends (the freeze, or the end of training), the exact cost is
   counted on the pruned model. Outside ±``tolerance`` of the target, the nearest structures are
   moved across: the smallest non-zero factors are set to zero (too expensive), or the most
   recently zeroed ones come back (too cheap), one at a time, never past the other edge of the
   band, recounting exactly after each round. The model that is then pruned is the gated model
   as it stands, so the removal is exact.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from sss.budget.landing import land_by_estimate, land_two_level
from sss.budget.targets import LATENCY_NOISE, parse_budget, parse_latency_target
from sss.measure import count, format_count, structure_costs
from sss.measure.latency_model import LatencyModel
from sss.optim.penalty import base_penalties, set_penalty_scale
from sss.structures import gates
from sss.structures.gate import factors_restored
from sss.structures.paths import under
from sss.structures.prune import prune
from sss.structures.registry import get_kind


def dense_architecture(model: nn.Module) -> nn.Module:
    """The plain model with every structure kept (``model`` is unchanged), the reference a
    relative latency target is timed against."""
    with factors_restored(model) as refs:
        for ref in refs:
            ref.weight.fill_(1.0)
        return copy.deepcopy(prune(model)).to(memory_format=torch.contiguous_format)


class BudgetController:
    """Steers γ toward a MACs or parameter target and lands the selection inside its band. It sets
    γ only through :func:`sss.optim.set_penalty_scale`; steered by distance (``selection_steps``),
    the factors want no momentum: build them with ``build_optimizers(steered_by_distance=True)``."""

    def __init__(self, model: nn.Module, example: torch.Tensor, metric: str, target: float | str,
                 optimizer: torch.optim.Optimizer, *, round_to: int = 1, tolerance: float = 0.02,
                 latency: LatencyModel | None = None, selection_steps: int | None = None) -> None:  # fmt: skip
        self.metric, self.example, self.round_to, self.tolerance = metric, example, round_to, tolerance
        self.latency, self.selection_steps, self.bias = latency, selection_steps, 1.0
        if metric == "latency":
            if latency is None:
                raise ValueError("a latency target needs a LatencyModel (sss.measure.calibrate_latency)")
            self.cost: Callable[[nn.Module], float] = lambda compact: self.latency.predict(compact, example)
            self.band = (1 - 2 * tolerance, 1.0)  # at or under the target
        else:
            which = {"macs": 0, "params": 1}[metric]
            self.cost = lambda compact: count(compact, example)[which]
            self.band = (1 - tolerance, 1 + tolerance)
        self.dense = self.cost(prune(model, round_to=round_to))
        if metric == "latency":
            self.target = parse_latency_target(target, self.dense)
        else:
            self.target = parse_budget(target, self.dense, metric)
        if self.target >= self.dense * (1 - tolerance):
            raise ValueError(
                f"target_{metric} {self._fmt(self.target)} is not below the dense model's "
                f"{self._fmt(self.dense)}: there is nothing to remove; aim lower (e.g. 0.5 of dense)"
            )
        self.floor = floor = self._exact_all_zero(model)
        if self.target < (floor if metric == "latency" else floor * (1 + tolerance)):
            raise ValueError(f"target_{metric} {self._fmt(self.target)} is below what this model can reach: with "
                             f"every factor zero it keeps {self._fmt(floor)} ({floor / self.dense:.1%} of dense; "
                             "layers keep a channel, shortcuts and the head stay)")  # fmt: skip
        self.costs = structure_costs(model, example, self.cost)
        self.base = base_penalties(optimizer)
        self.price = self._prices(model, optimizer)
        self.scale, self.step_count = 1.0, 0
        self.last_nonzero = {r.name: torch.zeros(r.weight.numel(), dtype=torch.long) for r in gates(model)}

    def _prices(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """Per gate, its γ relative to the largest (its group's): steered by distance, a factor's
        threshold is the step's edge times this price, so its time to zero is ``|λ| / price``,
        the key every ranking of the selection and the landing sorts by (γ per kind, or per gate
        with ``gamma_macs_power``: the price of a knapsack). The doubling steering ranks by
        ``|λ|`` alone (price 1)."""
        top = max(self.base) or 1.0
        group = {id(p): k for k, g in enumerate(optimizer.param_groups) for p in g["params"]}
        steered = self.selection_steps is not None
        return {r.name: max(self.base[group[id(r.weight)]] / top, 1e-12) if steered else 1.0 for r in gates(model)}

    def key(self, name: str, value: torch.Tensor | float) -> float:
        """A live factor's place in the removal order: ``|λ| / price`` (smallest first)."""
        return abs(float(value)) / self.price.get(name, 1.0)

    def collapse_advice(self, compact: nn.Module) -> str:
        """What to change when the selection cut every path from input to output while steered
        here: near the target, the target (too small for this model to keep a path); far above
        it, the learning rate (γ is the controller's, so "lower γ" would change nothing)."""
        cost, target = self.cost(compact), self._fmt(self.target)
        if cost > self.target * self.band[1] * 1.25:
            return f"γ is steered toward target_{self.metric} {target}, so lower lr"
        return (f"target_{self.metric} {target} ({self.target / self.dense:.1%} of dense) is too small for this model: "
                f"at {self._fmt(cost)} no path from input to output is left. Aim higher: the smallest it shrinks to "
                f"is {self._fmt(self.floor)} ({self.floor / self.dense:.1%} of dense, every factor zero) and a "
                "working path takes more")  # fmt: skip

    def _fmt(self, value: float) -> str:
        return f"{value:.2f} ms (predicted)" if self.metric == "latency" else f"{format_count(value)} {self.metric}"

    def _exact_all_zero(self, model: nn.Module) -> float:
        with factors_restored(model) as refs:
            for r in refs:
                r.weight.zero_()
            return self.exact(model)

    def exact(self, model: nn.Module) -> float:
        """The cost of the model that pruning ``model`` now gives."""
        return self.cost(prune(model, round_to=self.round_to))

    def estimate(self, model: nn.Module, refs: list | None = None) -> float:
        """The cost of the current zero pattern from the per-structure costs (fast, approximate)."""
        refs = gates(model) if refs is None else refs
        gone = [get_kind(r.kind).owner(r.name) for r in refs
                if get_kind(r.kind).min_keep == 0 and r.num_zero == r.weight.numel()]  # fmt: skip
        saved = 0.0
        for r in refs:
            owner = get_kind(r.kind).owner(r.name)
            if r.name in self.costs and not under(owner, [g for g in gone if g != owner]):
                removable = r.weight.numel() - get_kind(r.kind).min_keep
                saved += self.costs[r.name] * min(r.num_zero, removable)
        return self.dense - saved

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> float:
        """Updates γ after one factor step; returns the estimated cost."""
        self.step_count += 1
        refs = gates(model)  # one walk of the model per step
        for r in refs:
            self.last_nonzero[r.name][r.weight.detach().flatten().cpu() != 0] = self.step_count
        est = self.estimate(model, refs)
        above = est > self.target
        if self.selection_steps is not None:
            self._steer_by_distance(model, optimizer, est)
            return est
        self.scale = min(1e3, self.scale * 2 ** (1 / 20)) if above else max(1e-3, self.scale * 2 ** (-1 / 10))
        set_penalty_scale(optimizer, self.scale if above else 0.0)
        return est

    def boundary(self, model: nn.Module, est: float, goal: float, bias: float = 1.0) -> float:
        """The :meth:`key` (``|λ| / price``) of the structure at ``goal``'s edge: zeroing every
        live structure up to it, smallest key first, brings the estimate (its structure costs
        times ``bias``) to ``goal`` (0: it is there already)."""
        refs = {r.name: r.weight.detach().view(-1) for r in gates(model)}
        edge = 0.0
        for name, i in self.removal_order(model, fine_only=False):
            if est <= goal:
                break
            est -= self.costs[name] * bias
            edge = self.key(name, refs[name][i])
        return edge

    def _steer_by_distance(self, model: nn.Module, optimizer: torch.optim.Optimizer, est: float) -> None:
        """γ in units of the learning rate, from the factors' distance to zero. The estimate
        follows a cubic path from dense to the target over the first 80% of the selection (Zhu
        & Gupta's gradual schedule: fast early, slow late, then still), and each step's
        threshold lr·γ is a tenth of the |λ| of the structure at the path's current edge: the
        structures below it reach zero over the next ten steps or so, and the others, held at
        their gate's largest, keep their ranking while the data moves them. No multiplier winds up at a small lr;
        structures cross zero a few at a time, weakest first, while the weights adapt; at or
        under the path γ is 0, so the loss can lift factors back."""
        if self.step_count % 20 == 1:  # the estimate is additive, channel costs are not: correct it
            self.bias = self.exact(model) / max(est, 1e-9)
        est *= self.bias
        span = max(1, int(0.8 * self.selection_steps))
        goal = self.target + (self.dense - self.target) * (1 - min(self.step_count / span, 1.0)) ** 3
        edge = self.boundary(model, est, goal, self.bias) / 10 if est > goal else 0.0
        set_penalty_scale(optimizer, edge, threshold=True)

    def land(self, model: nn.Module) -> tuple[float, list[str]]:
        """Moves the fewest structures across so that the exact cost is within the band; returns
        the exact cost and a log line. MACs and parameters: structure by structure, smallest |λ|
        first, by the estimate corrected by the exact count (:meth:`_land_by_estimate`). Latency,
        where one block is worth more than the band: a search by exact counts over the number
        of blocks and a prefix of the channels (:meth:`_land_two_level`)."""
        return land_two_level(self, model) if self.metric == "latency" else land_by_estimate(self, model)

    def removal_order(self, model: nn.Module, fine_only: bool) -> list[tuple[str, int]]:
        """The live structures, smallest :meth:`key` first, as many as each gate can lose (its minimum stays)."""
        refs = [r for r in gates(model) if r.name in self.costs and (not get_kind(r.kind).coarse or not fine_only)]
        kept = {r.name: int((r.weight != 0).sum()) for r in refs}
        order = []
        for _, n, i, keep in sorted((self.key(r.name, w), r.name, i, get_kind(r.kind).min_keep) for r in refs
                                    for i, w in enumerate(r.weight.detach().view(-1)) if w != 0):  # fmt: skip
            if kept[n] > keep:
                kept[n] -= 1
                order.append((n, i))
        return order

    def return_order(self, model: nn.Module, fine_only: bool) -> list[tuple[str, int]]:
        """The zero structures, the most recently zeroed first."""
        refs = [r for r in gates(model) if r.name in self.costs and (not get_kind(r.kind).coarse or not fine_only)]
        return [(n, i) for _, n, i in sorted((-int(self.last_nonzero[r.name][i]), r.name, i) for r in refs
                                             for i, w in enumerate(r.weight.detach().view(-1)) if w == 0)]  # fmt: skip

    def landed(self, cost: float, lo: float, hi: float) -> list[str]:
        reached = (lo <= cost or self.metric == "latency") and cost <= hi  # latency: at or under is on target
        side = "; under the target rather than over" if cost < lo else ""
        inside = "" if reached else f", NOT reached: the structures left are too coarse{side}"
        band = f"-{1 - self.band[0]:.0%}/+0%" if self.metric == "latency" else f"± {self.tolerance:.0%}"
        return [f"budget: {self._fmt(cost)} after the selection ({cost / self.dense:.1%} of dense; target "
                f"{self._fmt(self.target)} {band}{inside})"]  # fmt: skip

    @torch.no_grad()
    def land_measured(self, model: nn.Module, measure: Callable[[nn.Module], float], tries: int = 3) -> list[str]:
        """A latency target: :meth:`land` on the prediction, then time the compact model; while the
        timing is over the target by more than :data:`LATENCY_NOISE`, aim the prediction lower by
        the ratio and land again. Returns the log lines."""
        goal, lines = self.target, self.land(model)[1]
        try:
            for attempt in range(tries):
                measured = measure(prune(model, round_to=self.round_to))
                lines.append(f"budget: measured {measured:.2f} ms against the target {goal:.2f} ms")
                if measured <= goal * (1 + LATENCY_NOISE) or attempt == tries - 1:
                    if measured > goal * (1 + LATENCY_NOISE):
                        lines.append(f"budget: latency target NOT reached: the compact model times {measured:.2f} ms")
                    return lines
                self.target *= goal / measured  # the prediction is optimistic on this machine: aim lower
                lines += self.land(model)[1]
            return lines
        finally:
            self.target = goal

    def state(self) -> dict:
        return {"scale": self.scale, "step": self.step_count, "last_nonzero": self.last_nonzero,
                "costs": self.costs, "dense": self.dense,
                "coefficients": self.latency.coefficients if self.latency is not None else None}  # fmt: skip

    def load_state(self, state: dict) -> None:
        self.scale, self.step_count, self.last_nonzero = state["scale"], state["step"], dict(state["last_nonzero"])
        if "costs" in state:  # the costs this run started with (a latency model's differ per calibration)
            self.costs, self.dense = dict(state["costs"]), state["dense"]
            if state.get("coefficients") is not None and self.latency is not None:
                self.latency.coefficients = list(state["coefficients"])
