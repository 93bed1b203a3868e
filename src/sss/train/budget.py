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

import re

import torch
from torch import nn

from sss.measure import count, structure_costs
from sss.structures import gates
from sss.structures.paths import under
from sss.structures.registry import get_kind
from sss.surgery import prune

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_budget(value: float | str, dense: float, what: str) -> float:
    """A target as an absolute cost: a fraction of ``dense`` (``0.5``) or a count (``18M``, ``2.5e6``)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*([kmg]?)\s*", value.lower())
        if not m:
            raise ValueError(f"target_{what} {value!r} is neither a fraction (0.5) nor a count (18M, 250k)")
        value = float(m.group(1)) * _SUFFIX[m.group(2)]
    return float(value) * dense if value <= 1 else float(value)


class BudgetController:
    """Steers γ toward a MACs or parameter target and lands the selection inside its band."""

    def __init__(self, model: nn.Module, example: torch.Tensor, metric: str, target: float | str,
                 optimizer: torch.optim.Optimizer, *, round_to: int = 1, tolerance: float = 0.02) -> None:  # fmt: skip
        self.metric, self.example, self.round_to, self.tolerance = metric, example, round_to, tolerance
        self.which = {"macs": 0, "params": 1}[metric]
        self.dense = count(model, example)[self.which]
        self.target = parse_budget(target, self.dense, metric)
        floor = self._exact_all_zero(model)
        if self.target < floor * (1 + tolerance):
            raise ValueError(f"target_{metric} {self._fmt(self.target)} is below what this model can reach: with "
                             f"every factor zero it keeps {self._fmt(floor)} ({floor / self.dense:.1%} of dense; "
                             "layers keep a channel, shortcuts and the head stay)")  # fmt: skip
        self.costs = structure_costs(model, example, metric)
        self.base = [g["gamma"] for g in optimizer.param_groups]
        self.scale, self.step_count = 1.0, 0
        self.last_nonzero = {r.name: torch.zeros(r.weight.numel(), dtype=torch.long) for r in gates(model)}

    def _fmt(self, value: float) -> str:
        return f"{value / 1e6:.2f}M {self.metric}"

    def _exact_all_zero(self, model: nn.Module) -> float:
        refs = gates(model)
        saved = [r.weight.detach().clone() for r in refs]
        with torch.no_grad():
            for r in refs:
                r.weight.zero_()
        try:
            return self.exact(model)
        finally:
            with torch.no_grad():
                for r, w in zip(refs, saved, strict=True):
                    r.weight.copy_(w)

    def exact(self, model: nn.Module) -> float:
        """The cost of the model that pruning ``model`` now gives."""
        return count(prune(model, round_to=self.round_to), self.example)[self.which]

    def estimate(self, model: nn.Module, refs: list | None = None) -> float:
        """The cost of the current zero pattern from the per-structure costs (fast, approximate)."""
        refs = gates(model) if refs is None else refs
        gone = [r.name.rsplit(".", 1)[0] for r in refs
                if get_kind(r.kind).min_keep == 0 and r.num_zero == r.weight.numel()]  # fmt: skip
        saved = 0.0
        for r in refs:
            if r.name in self.costs and not under(r.name.rsplit(".", 1)[0], [g for g in gone if g + ".gate" != r.name]):
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
        self.scale = min(1e3, self.scale * 2 ** (1 / 20)) if above else max(1e-3, self.scale * 2 ** (-1 / 10))
        for group, base in zip(optimizer.param_groups, self.base, strict=True):
            group["gamma"] = base * self.scale if above else 0.0
        return est

    @torch.no_grad()
    def land(self, model: nn.Module, rounds: int = 8) -> tuple[float, list[str]]:
        """Moves the fewest structures across so that the exact cost is within the band; returns
        the exact cost and a log line. The estimate's bias is corrected by the exact count."""
        lo, hi = self.target * (1 - self.tolerance), self.target * (1 + self.tolerance)
        cost = self.exact(model)
        for _ in range(rounds):
            if lo <= cost <= hi:
                break
            est = self.estimate(model)
            ratio = est / cost
            refs = {r.name: r for r in gates(model) if r.name in self.costs}
            slots = [(name, i) for name, r in refs.items() for i in range(r.weight.numel())]
            if cost > hi:  # zero the smallest factors first
                order = sorted((float(refs[n].weight.view(-1)[i].abs()), n, i) for n, i in slots
                               if refs[n].weight.view(-1)[i] != 0)  # fmt: skip
                for _, name, i in order:
                    if est <= self.target * ratio:
                        break
                    if est - self.costs[name] >= lo * ratio:  # never past the band's other edge
                        refs[name].weight.view(-1)[i] = 0.0
                        est -= self.costs[name]
            else:  # bring back the structures zeroed last; if none fits in the band, the latest anyway
                order = sorted((-int(self.last_nonzero[n][i]), n, i) for n, i in slots
                               if refs[n].weight.view(-1)[i] == 0)  # fmt: skip
                fits = [(n, i) for _, n, i in order if est + self.costs[n] <= hi * ratio]
                for name, i in fits or [(n, i) for _, n, i in order[:1]]:  # a coarse one: the next round descends
                    if est >= self.target * ratio:
                        break
                    w = refs[name].weight.view(-1)
                    w[i] = float(w[w > 0].min()) if bool((w > 0).any()) else 1e-3
                    est += self.costs[name]
            cost = self.exact(model)
        inside = "" if lo <= cost <= hi else ", NOT reached: the structures left are too coarse"
        return cost, [f"budget: {self._fmt(cost)} after the selection ({cost / self.dense:.1%} of dense; target "
                      f"{self._fmt(self.target)} ± {self.tolerance:.0%}{inside})"]  # fmt: skip

    def state(self) -> dict:
        return {"scale": self.scale, "step": self.step_count, "last_nonzero": self.last_nonzero}

    def load_state(self, state: dict) -> None:
        self.scale, self.step_count, self.last_nonzero = state["scale"], state["step"], dict(state["last_nonzero"])

