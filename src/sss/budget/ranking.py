"""The one removal ranking of a budgeted selection: which structure goes next, which comes back
first, and what the current zero pattern is estimated to cost. The steering and every landing
read it (docs/design.md, "budgets")."""

from __future__ import annotations

import torch
from torch import nn

from sss.structures import gates
from sss.structures.paths import under
from sss.structures.registry import get_kind


def gate_prices(model: nn.Module, optimizer: torch.optim.Optimizer, *, relative: bool) -> dict[str, float]:
    """Per gate, its γ relative to the largest (its group's) when ``relative`` (steered by
    distance: a factor's threshold is the step's edge times this price, so its time to zero is
    ``|λ| / price``; γ per kind, or per gate with ``gamma_macs_power``: the price of a knapsack);
    else 1 for every gate (the doubling steering ranks by ``|λ|`` alone)."""
    bases = [group["gamma_base"] for group in optimizer.param_groups]
    top = max(bases) or 1.0
    group = {id(p): k for k, g in enumerate(optimizer.param_groups) for p in g["params"]}
    return {r.name: max(bases[group[id(r.weight)]] / top, 1e-12) if relative else 1.0 for r in gates(model)}


class Ranking:
    """The structures of a gated model in removal order.

    Args:
        model: The gated model.
        costs: Gate name → what one of its structures costs (:func:`sss.measure.structure_costs`).
        dense: The cost with every structure kept.
        prices: Gate name → price (:func:`gate_prices`); a live factor's key is ``|λ| / price``.
    """

    def __init__(self, model: nn.Module, costs: dict[str, float], dense: float, prices: dict[str, float]) -> None:
        self.costs, self.dense, self.prices = costs, dense, prices
        #: Gate name → per factor, the last step at which it was non-zero (the return order).
        self.last_nonzero = {r.name: torch.zeros(r.weight.numel(), dtype=torch.long) for r in gates(model)}

    def key(self, name: str, value: torch.Tensor | float) -> float:
        """A live factor's place in the removal order: ``|λ| / price`` (smallest first)."""
        return abs(float(value)) / self.prices.get(name, 1.0)

    def record(self, refs: list, step: int) -> None:
        """Marks the factors of ``refs`` that are non-zero at ``step``."""
        for r in refs:
            self.last_nonzero[r.name][r.weight.detach().flatten().cpu() != 0] = step

    def estimate(self, model: nn.Module, refs: list | None = None) -> float:
        """The cost of the current zero pattern from the per-structure costs (fast, approximate;
        a structure inside a zero block is not counted twice)."""
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

    def boundary(self, model: nn.Module, est: float, goal: float, bias: float = 1.0) -> float:
        """The :meth:`key` of the structure at ``goal``'s edge: zeroing every live structure up
        to it, smallest key first, brings the estimate (its structure costs times ``bias``) to
        ``goal`` (0: it is there already)."""
        refs = {r.name: r.weight.detach().view(-1) for r in gates(model)}
        edge = 0.0
        for name, i in self.removal_order(model, fine_only=False):
            if est <= goal:
                break
            est -= self.costs[name] * bias
            edge = self.key(name, refs[name][i])
        return edge
