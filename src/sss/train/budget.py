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
import re
from collections.abc import Callable

import torch
from torch import nn

from sss.measure import count, structure_costs
from sss.measure.latency import device_name
from sss.measure.latency_model import LatencyModel, calibrate_latency
from sss.structures import gates
from sss.structures.gate import factors_restored
from sss.structures.paths import under
from sss.structures.registry import get_kind
from sss.surgery import prune

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
#: How far over a latency target a timing may be and still count as on target: the spread of
#: repeated medians of :func:`sss.measure.compare_latency` on a quiet machine.
LATENCY_NOISE = 0.03


def parse_budget(value: float | str, dense: float, what: str) -> float:
    """A target as an absolute cost: a fraction of ``dense`` (``0.5``) or a count (``18M``, ``2.5e6``)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*([kmg]?)\s*", value.lower())
        if not m:
            raise ValueError(f"target_{what} {value!r} is neither a fraction (0.5) nor a count (18M, 250k)")
        value = float(m.group(1)) * _SUFFIX[m.group(2)]
    return float(value) * dense if value <= 1 else float(value)


def parse_latency_target(value: float | str, dense: float) -> float:
    """A latency target in ms: milliseconds (``5``, ``"2.5"``) or a fraction of ``dense``, the dense
    model's latency on this machine (``"0.7x"``)."""
    if not isinstance(value, str):
        return float(value)
    m = re.fullmatch(r"\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*(x?)\s*", value.lower())
    if not m:
        raise ValueError(f"target_latency {value!r} is neither milliseconds (5, 2.5) nor a fraction of the dense "
                         "model's latency (0.7x)")  # fmt: skip
    number = float(m.group(1))
    if m.group(2) and not 0 < number < 1:
        raise ValueError(f"target_latency {value!r}: a fraction of the dense model's latency is between 0 and 1")
    return number * dense if m.group(2) else number


def is_relative(target: float | str | None) -> bool:
    """Whether a latency target is a fraction of the dense model's latency (``"0.7x"``)."""
    return isinstance(target, str) and target.strip().lower().endswith("x")


def dense_architecture(model: nn.Module) -> nn.Module:
    """The plain model with every structure kept (``model`` is unchanged), the reference a
    relative latency target is timed against."""
    with factors_restored(model) as refs:
        for ref in refs:
            ref.weight.fill_(1.0)
        return copy.deepcopy(prune(model)).to(memory_format=torch.contiguous_format)


class BudgetController:
    """Steers γ toward a MACs or parameter target and lands the selection inside its band."""

    def __init__(self, model: nn.Module, example: torch.Tensor, metric: str, target: float | str,
                 optimizer: torch.optim.Optimizer, *, round_to: int = 1, tolerance: float = 0.02,
                 latency: LatencyModel | None = None) -> None:  # fmt: skip
        self.metric, self.example, self.round_to, self.tolerance = metric, example, round_to, tolerance
        self.latency = latency
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
        floor = self._exact_all_zero(model)
        if self.target < (floor if metric == "latency" else floor * (1 + tolerance)):
            raise ValueError(f"target_{metric} {self._fmt(self.target)} is below what this model can reach: with "
                             f"every factor zero it keeps {self._fmt(floor)} ({floor / self.dense:.1%} of dense; "
                             "layers keep a channel, shortcuts and the head stay)")  # fmt: skip
        self.costs = structure_costs(model, example, self.cost)
        self.base = [g["gamma"] for g in optimizer.param_groups]
        self.scale, self.step_count = 1.0, 0
        self.last_nonzero = {r.name: torch.zeros(r.weight.numel(), dtype=torch.long) for r in gates(model)}

    def _fmt(self, value: float) -> str:
        return f"{value:.2f} ms (predicted)" if self.metric == "latency" else f"{value / 1e6:.2f}M {self.metric}"

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

    def land(self, model: nn.Module) -> tuple[float, list[str]]:
        """Moves the fewest structures across so that the exact cost is within the band; returns
        the exact cost and a log line. MACs and parameters: structure by structure, smallest |λ|
        first, by the estimate corrected by the exact count (:meth:`_land_by_estimate`). Latency,
        where one block is worth more than the band: a search by exact counts over the number
        of blocks and a prefix of the channels (:meth:`_land_two_level`)."""
        return self._land_two_level(model) if self.metric == "latency" else self._land_by_estimate(model)

    @torch.no_grad()
    def _land_by_estimate(self, model: nn.Module, rounds: int = 8) -> tuple[float, list[str]]:
        """Moves the fewest structures across so that the exact cost is within the band; returns
        the exact cost and a log line. The estimate's bias is corrected by the exact count."""
        lo, hi = self.target * self.band[0], self.target * self.band[1]
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
                    w[i] = self._brought_back(w)
                    est += self.costs[name]
            cost = self.exact(model)
        if not lo <= cost <= hi:  # the estimate misjudged the coarse pattern: exact counts, fine structures
            cost = self._land_fine(model, lo, hi, cost)
        if not lo <= cost <= hi:  # nothing fine left to move: the nearest coarse pattern, never over
            cost = self._land_coarse(model, lo, hi, cost)
        return cost, self._landed(cost, lo, hi)

    def _removal_order(self, model: nn.Module, fine_only: bool) -> list[tuple[str, int]]:
        """The live structures, smallest |λ| first, as many as each gate can lose (its minimum stays)."""
        refs = [r for r in gates(model) if r.name in self.costs and (get_kind(r.kind).min_keep > 0 or not fine_only)]
        kept = {r.name: int((r.weight != 0).sum()) for r in refs}
        order = []
        for _, n, i, keep in sorted((float(w.abs()), r.name, i, get_kind(r.kind).min_keep) for r in refs
                                    for i, w in enumerate(r.weight.detach().view(-1)) if w != 0):  # fmt: skip
            if kept[n] > keep:
                kept[n] -= 1
                order.append((n, i))
        return order

    def _return_order(self, model: nn.Module, fine_only: bool) -> list[tuple[str, int]]:
        """The zero structures, the most recently zeroed first."""
        refs = [r for r in gates(model) if r.name in self.costs and (get_kind(r.kind).min_keep > 0 or not fine_only)]
        return [(n, i) for _, n, i in sorted((-int(self.last_nonzero[r.name][i]), r.name, i) for r in refs
                                             for i, w in enumerate(r.weight.detach().view(-1)) if w == 0)]  # fmt: skip

    @staticmethod
    def _brought_back(w: torch.Tensor) -> float:
        """The value a structure comes back with: its gate's smallest live factor."""
        return float(w[w > 0].min()) if bool((w > 0).any()) else 1e-3

    @torch.no_grad()
    def _land_coarse(self, model: nn.Module, lo: float, hi: float, cost: float, tries: int = 64) -> float:
        """A budget is a ceiling: over it, the live structures with the smallest |λ| are zeroed one
        at a time (each gate keeping its minimum) until the cost is at most ``hi``; then, under the
        band, the zeroed ones come back, the most recently zeroed first, each only if the cost
        stays at most ``hi`` (at most ``tries`` exact counts each way)."""
        refs = {r.name: r.weight.view(-1) for r in gates(model) if r.name in self.costs}
        for n, i in self._removal_order(model, fine_only=False)[:tries]:
            if cost <= hi:
                break
            refs[n][i] = 0.0
            cost = self.exact(model)
        for n, i in self._return_order(model, fine_only=False)[:tries] if cost < lo else []:
            refs[n][i] = self._brought_back(refs[n])
            trial = self.exact(model)
            if trial > hi:
                refs[n][i] = 0.0
            else:
                cost = trial
            if cost >= lo:
                break
        return cost

    @torch.no_grad()
    def _land_fine(self, model: nn.Module, lo: float, hi: float, cost: float) -> float:
        """The estimate's fallback: the coarse structures (blocks, branches) stay as they are, and
        a binary search by exact counts finds the fewest fine ones (channels, groups) to move:
        too expensive, the smallest non-zero |λ| are zeroed (each gate keeping its minimum);
        too cheap, the most recently zeroed come back. Either way the cost is monotone in the
        number moved, so the search ends in the band, or where one structure jumps over it, on
        the cheaper side."""
        weights = {r.name: r.weight.view(-1) for r in gates(model) if r.name in self.costs}
        saved = {n: w.clone() for n, w in weights.items()}
        if cost > hi:
            order = [(n, i, 0.0) for n, i in self._removal_order(model, fine_only=True)]
        else:
            order = [(n, i, self._brought_back(saved[n])) for n, i in self._return_order(model, fine_only=True)]

        def apply(k: int) -> float:
            for n, w in weights.items():
                w.copy_(saved[n])
            for n, i, value in order[:k]:
                weights[n][i] = value
            return self.exact(model)

        a, b = 0, len(order)
        while a < b:  # the cost is monotone in k: it falls (zeroing) or rises (bringing back)
            mid = (a + b) // 2
            c = apply(mid)
            a, b = (a, mid) if (c <= hi if cost > hi else c >= lo) else (mid + 1, b)
        landed = apply(a)
        return apply(a - 1) if cost < lo and landed > hi and a > 0 else landed  # one step too far: stay under

    @staticmethod
    def _miss(cost: float, lo: float, hi: float) -> float:
        return 0.0 if lo <= cost <= hi else min(abs(cost - lo), abs(cost - hi))

    @torch.no_grad()
    def _land_two_level(self, model: nn.Module, rounds: int = 8) -> tuple[float, list[str]]:
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
        lo, hi = self.target * self.band[0], self.target * self.band[1]
        cost = self.exact(model)
        if lo <= cost <= hi:
            return cost, self._landed(cost, lo, hi)
        all_refs = [r for r in gates(model) if r.name in self.costs]
        refs = {r.name: r.weight.view(-1) for r in all_refs}
        coarse_gate = {r.name: get_kind(r.kind).min_keep == 0 for r in all_refs}
        values = {n: w.clone() for n, w in refs.items()}
        zero = sorted((int(self.last_nonzero[n][i]), n, i) for n, w in values.items() for i in range(w.numel())
                      if w[i] == 0)  # fmt: skip
        live = sorted((float(w[i].abs()), n, i) for n, w in values.items() for i in range(w.numel()) if w[i] != 0)
        order = [(n, i) for _, n, i in zero] + [(n, i) for _, n, i in live]
        coarse, fine = [x for x in order if coarse_gate[x[0]]], [x for x in order if not coarse_gate[x[0]]]
        back = {n: self._brought_back(w) for n, w in values.items()}

        def apply(removed: list[tuple[str, int]]) -> float:
            for n, w in refs.items():  # brought back: the gate's smallest live value
                w.copy_(torch.where(values[n] == 0, torch.full_like(w, back[n]), values[n]))
            for n, i in removed:
                refs[n][i] = 0.0
            return self.exact(model)

        def shortest(head: list, tail: list) -> list:  # head + the shortest prefix of tail with cost <= hi
            a, b = 0, len(tail)
            while a < b:
                mid = (a + b) // 2
                a, b = (a, mid) if apply(head + tail[:mid]) <= hi else (mid + 1, b)
            return head + tail[:a]

        def miss(removed: list) -> float:
            return self._miss(apply(removed), lo, hi)

        joint = shortest([], order)
        best = (miss(joint), joint)
        now = sum(1 for n, _ in joint if coarse_gate[n])
        for m in sorted(range(len(coarse) + 1), key=lambda m: (abs(m - now), m))[:rounds]:
            if best[0] == 0.0:
                break
            removed = shortest(coarse[:m], fine)
            best = min(best, (miss(removed), removed), key=lambda t: t[0])
        cost = apply(best[1])
        return cost, self._landed(cost, lo, hi)

    def _landed(self, cost: float, lo: float, hi: float) -> list[str]:
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


def create_budget(cfg, model: nn.Module, example: torch.Tensor, optimizer: torch.optim.Optimizer | None,
                  runtime, log: Callable[[str], None]) -> BudgetController | None:  # fmt: skip
    """The run's budget controller (``None`` without a target or factors). A latency target first
    fits a :class:`~sss.measure.latency_model.LatencyModel` on rank 0 (every rank uses its fit)."""
    targets = {"macs": cfg.target_macs, "params": cfg.target_params, "latency": cfg.target_latency}
    metric = next((k for k, v in targets.items() if v is not None), None)
    if metric is None or optimizer is None:
        return None
    latency = None
    if metric == "latency":
        fitted = calibrate_latency(model, example, batch=cfg.latency_batch, device=runtime.device, seed=cfg.seed)
        latency = runtime.agree(fitted if runtime.main else None)
        log(f"latency model at batch {latency.batch} on {device_name(runtime.device)}: "
            f"{latency.predict(model, example):.2f} ms predicted for the dense model, fit within "
            f"{latency.fit_error:.0%} of its timings")  # fmt: skip
    return BudgetController(model, example, metric, targets[metric], optimizer, round_to=cfg.round_to, latency=latency)
