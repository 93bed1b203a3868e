"""Landing a selection inside its budget's band: pure functions of the :class:`Target`, the
:class:`Ranking` and the gated model, whose factors they set (docs/design.md, "budgets"). :func:`land`
picks the strategy:

- :func:`land_by_estimate` (MACs, parameters): structure by structure, smallest |λ| first, by
  the per-structure estimate corrected by the exact count; then, where the estimate misjudged
  a coarse pattern, :func:`land_fine` (an exact binary search over fine structures) and
  :func:`land_coarse` (a budget is a ceiling: the nearest coarse pattern under it).
- :func:`land_two_level` (latency, where one block is worth more than the band): a search by
  exact counts over the number of coarse structures and a prefix of the fine ranking.
"""

from __future__ import annotations

import torch
from torch import nn

from sss.budget.ranking import Ranking
from sss.budget.targets import Target
from sss.structures import gates
from sss.structures.registry import get_kind


@torch.no_grad()
def land_by_estimate(target: Target, ranking: Ranking, model: nn.Module, rounds: int = 8) -> tuple[float, list[str]]:
    """Moves the fewest structures across so that the exact cost is within the band; returns
    the exact cost and a log line. The estimate's bias is corrected by the exact count."""
    lo, hi = target.bounds
    cost = target.exact(model)
    for _ in range(rounds):
        if lo <= cost <= hi:
            break
        est = ranking.estimate(model)
        ratio = est / cost
        refs = {r.name: r for r in gates(model) if r.name in ranking.costs}
        slots = [(name, i) for name, r in refs.items() for i in range(r.weight.numel())]
        if cost > hi:  # zero the smallest factors first
            order = sorted((ranking.key(n, refs[n].weight.view(-1)[i]), n, i) for n, i in slots
                           if refs[n].weight.view(-1)[i] != 0)  # fmt: skip
            for _, name, i in order:
                if est <= target.value * ratio:
                    break
                if est - ranking.costs[name] >= lo * ratio:  # never past the band's other edge
                    refs[name].weight.view(-1)[i] = 0.0
                    est -= ranking.costs[name]
        else:  # bring back the structures zeroed last; if none fits in the band, the latest anyway
            order = sorted((-int(ranking.last_nonzero[n][i]), n, i) for n, i in slots
                           if refs[n].weight.view(-1)[i] == 0)  # fmt: skip
            fits = [(n, i) for _, n, i in order if est + ranking.costs[n] <= hi * ratio]
            for name, i in fits or [(n, i) for _, n, i in order[:1]]:  # a coarse one: the next round descends
                if est >= target.value * ratio:
                    break
                w = refs[name].weight.view(-1)
                w[i] = brought_back(w)
                est += ranking.costs[name]
        cost = target.exact(model)
    if not lo <= cost <= hi:  # the estimate misjudged the coarse pattern: exact counts, fine structures
        cost = land_fine(target, ranking, model, lo, hi, cost)
    if not lo <= cost <= hi:  # nothing fine left to move: the nearest coarse pattern, never over
        cost = land_coarse(target, ranking, model, lo, hi, cost)
    return cost, target.landed(cost)


@torch.no_grad()
def land_coarse(target: Target, ranking: Ranking, model: nn.Module, lo: float, hi: float, cost: float,
                tries: int = 64) -> float:  # fmt: skip
    """A budget is a ceiling: over it, the live structures with the smallest |λ| are zeroed one
    at a time (each gate keeping its minimum) until the cost is at most ``hi``; then, under the
    band, the zeroed ones come back, the most recently zeroed first, each only if the cost
    stays at most ``hi`` (at most ``tries`` exact counts each way)."""
    refs = {r.name: r.weight.view(-1) for r in gates(model) if r.name in ranking.costs}
    for n, i in ranking.removal_order(model, fine_only=False)[:tries]:
        if cost <= hi:
            break
        refs[n][i] = 0.0
        cost = target.exact(model)
    for n, i in ranking.return_order(model, fine_only=False)[:tries] if cost < lo else []:
        refs[n][i] = brought_back(refs[n])
        trial = target.exact(model)
        if trial > hi:
            refs[n][i] = 0.0
        else:
            cost = trial
        if cost >= lo:
            break
    return cost


@torch.no_grad()
def land_fine(target: Target, ranking: Ranking, model: nn.Module, lo: float, hi: float, cost: float) -> float:
    """The estimate's fallback: the coarse structures (blocks, branches) stay as they are, and
    a binary search by exact counts finds the fewest fine ones (channels, groups) to move:
    too expensive, the smallest non-zero |λ| are zeroed (each gate keeping its minimum);
    too cheap, the most recently zeroed come back. Either way the cost is monotone in the
    number moved, so the search ends in the band, or where one structure jumps over it, on
    the cheaper side."""
    weights = {r.name: r.weight.view(-1) for r in gates(model) if r.name in ranking.costs}
    saved = {n: w.clone() for n, w in weights.items()}
    if cost > hi:
        order = [(n, i, 0.0) for n, i in ranking.removal_order(model, fine_only=True)]
    else:
        order = [(n, i, brought_back(saved[n])) for n, i in ranking.return_order(model, fine_only=True)]

    def apply(k: int) -> float:
        for n, w in weights.items():
            w.copy_(saved[n])
        for n, i, value in order[:k]:
            weights[n][i] = value
        return target.exact(model)

    a, b = 0, len(order)
    while a < b:  # the cost is monotone in k: it falls (zeroing) or rises (bringing back)
        mid = (a + b) // 2
        c = apply(mid)
        a, b = (a, mid) if (c <= hi if cost > hi else c >= lo) else (mid + 1, b)
    landed = apply(a)
    return apply(a - 1) if cost < lo and landed > hi and a > 0 else landed  # one step too far: stay under


def _miss(cost: float, lo: float, hi: float) -> float:
    return 0.0 if lo <= cost <= hi else min(abs(cost - lo), abs(cost - hi))


@torch.no_grad()
def land_two_level(target: Target, ranking: Ranking, model: nn.Module, rounds: int = 8) -> tuple[float, list[str]]:
    """Moves the fewest structures across so that the exact cost is within the band; returns
    the exact cost and a log line.

    The structures are ranked as the selection left them: the ones zero longest, then the
    ones zeroed most recently, then the non-zero ones by |λ|, smallest first; the current
    pattern is a prefix of that ranking (its zeros). A binary search by exact counts finds
    the shortest prefix whose cost is at most the band's top (the cost only falls as a
    prefix grows): the structures the selection valued least go first, whatever their kind,
    so a trained model changes least. When that prefix jumps over the band (one coarse
    structure, a block, is worth more than the band), coarse structures (blocks, branches)
    and fine ones (channels, groups) are ranked apart: for a number of coarse ones removed,
    the nearest to the prefix's first (at most ``rounds`` numbers), the same search runs
    over the fine ranking, and the first landing inside the band wins; else the nearest.
    """
    lo, hi = target.bounds
    cost = target.exact(model)
    if lo <= cost <= hi:
        return cost, target.landed(cost)
    all_refs = [r for r in gates(model) if r.name in ranking.costs]
    refs = {r.name: r.weight.view(-1) for r in all_refs}
    coarse_gate = {r.name: get_kind(r.kind).coarse for r in all_refs}
    values = {n: w.clone() for n, w in refs.items()}
    zero = sorted((int(ranking.last_nonzero[n][i]), n, i) for n, w in values.items() for i in range(w.numel())
                  if w[i] == 0)  # fmt: skip
    live = sorted((float(w[i].abs()), n, i) for n, w in values.items() for i in range(w.numel()) if w[i] != 0)
    order = [(n, i) for _, n, i in zero] + [(n, i) for _, n, i in live]
    coarse, fine = [x for x in order if coarse_gate[x[0]]], [x for x in order if not coarse_gate[x[0]]]
    back = {n: brought_back(w) for n, w in values.items()}

    def apply(removed: list[tuple[str, int]]) -> float:
        for n, w in refs.items():  # brought back: the gate's smallest live value
            w.copy_(torch.where(values[n] == 0, torch.full_like(w, back[n]), values[n]))
        for n, i in removed:
            refs[n][i] = 0.0
        return target.exact(model)

    def shortest(head: list, tail: list) -> list:  # head + the shortest prefix of tail with cost <= hi
        a, b = 0, len(tail)
        while a < b:
            mid = (a + b) // 2
            a, b = (a, mid) if apply(head + tail[:mid]) <= hi else (mid + 1, b)
        return head + tail[:a]

    def miss(removed: list) -> float:
        return _miss(apply(removed), lo, hi)

    joint = shortest([], order)
    best = (miss(joint), joint)
    now = sum(1 for n, _ in joint if coarse_gate[n])
    for m in sorted(range(len(coarse) + 1), key=lambda m: (abs(m - now), m))[:rounds]:
        if best[0] == 0.0:
            break
        removed = shortest(coarse[:m], fine)
        best = min(best, (miss(removed), removed), key=lambda t: t[0])
    cost = apply(best[1])
    return cost, target.landed(cost)


def brought_back(w: torch.Tensor) -> float:
    """The value a structure comes back with: its gate's smallest live factor."""
    return float(w[w > 0].min()) if bool((w > 0).any()) else 1e-3


def land(target: Target, ranking: Ranking, model: nn.Module) -> tuple[float, list[str]]:
    """Moves the fewest structures across so that the exact cost is within the band; returns the
    exact cost and a log line. MACs and parameters: :func:`land_by_estimate`. Latency, where one
    block is worth more than the band: :func:`land_two_level`."""
    strategy = land_two_level if target.metric == "latency" else land_by_estimate
    return strategy(target, ranking, model)
