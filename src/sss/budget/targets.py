"""The budget targets a run can aim at, how their values read, and the :class:`Target` a
controller aims at: the one place that knows them.

``target_macs`` and ``target_params`` take a fraction of the dense model (``0.5``) or a count
(``18M``, ``250k``, ``2.5e6``); ``target_latency`` takes milliseconds (``2.5``) or a fraction
of the dense model's latency (``"0.7x"``). A run has at most one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sss.measure import count, format_count
from sss.measure.latency_model import LatencyModel
from sss.structures.gate import factors_restored
from sss.structures.prune import prune

#: Config key → the metric the budget controller steers.
TARGETS: dict[str, str] = {"target_macs": "macs", "target_params": "params", "target_latency": "latency"}

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
#: How far over a latency target a timing may be and still count as on target: the spread of
#: repeated medians of :func:`sss.measure.compare_latency` on a quiet machine.
LATENCY_NOISE = 0.03


def parse_budget(value: float | str, dense: float, what: str) -> float:
    """A target as an absolute cost: a fraction of ``dense`` (``0.5``) or a count (``18M``, ``2.5e6``)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmg]?)\s*", value.lower())
        if not m:
            raise ValueError(f"target_{what} {value!r} is neither a fraction (0.5) nor a count (18M, 250k)")
        value = float(m.group(1)) * _SUFFIX[m.group(2)]
    if 1 < value < 1000:  # 1.5: a fraction mistyped, or a count missing its unit; never 1.5 MACs
        raise ValueError(f"target_{what} {value:g} is ambiguous: a fraction of dense is at most 1 (0.5), a count "
                         f"takes a unit or is at least 1000 (1.5M, 250k)")  # fmt: skip
    return float(value) * dense if value <= 1 else float(value)


def parse_latency_target(value: float | str, dense: float) -> float:
    """A latency target in ms: milliseconds (``5``, ``"2.5"``) or a fraction of ``dense``, the dense
    model's latency on this machine (``"0.7x"``)."""
    if not isinstance(value, str):
        return float(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(x?)\s*", value.lower())
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


def parse_target(key: str, value: float | str) -> None:
    """Raises ``ValueError`` naming ``key`` if ``value`` cannot be read as that target."""
    parse_latency_target(value, 1.0) if TARGETS[key] == "latency" else parse_budget(value, 1.0, TARGETS[key])


def chosen_target(cfg: Any) -> tuple[str, float | str] | None:
    """The metric and value of the target ``cfg`` sets (``None``: no target)."""
    return next(((metric, getattr(cfg, key)) for key, metric in TARGETS.items() if getattr(cfg, key) is not None),
                None)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Target:
    """A budget as a controller aims at it, built once by :func:`create_target`: what a compact
    model costs, the band around the target that counts as landed, and how its values read.

    Attributes:
        metric: ``"macs"``, ``"params"`` or ``"latency"`` (milliseconds, predicted).
        value: The target, an absolute cost.
        dense: The cost of the model with every structure kept.
        floor: The cost with every factor zero (the smallest the model shrinks to).
        tolerance: The band's half-width, a fraction of the target.
        cost: The cost of a compact (pruned) model.
        round_to: Channel counts are rounded to this multiple when the model is pruned.
    """

    metric: str
    value: float
    dense: float
    floor: float
    tolerance: float
    cost: Callable[[nn.Module], float]
    round_to: int = 1

    @property
    def band(self) -> tuple[float, float]:
        """The landed band as fractions of the target: ± ``tolerance`` for counts, which are
        exact; a latency, a prediction, lands at or under the target."""
        return (1 - 2 * self.tolerance, 1.0) if self.metric == "latency" else (1 - self.tolerance, 1 + self.tolerance)

    @property
    def bounds(self) -> tuple[float, float]:
        """The band as absolute costs ``(lo, hi)``."""
        return self.value * self.band[0], self.value * self.band[1]

    def exact(self, model: nn.Module) -> float:
        """The cost of the model that pruning the gated ``model`` now gives."""
        return self.cost(prune(model, round_to=self.round_to))

    def aimed_at(self, value: float) -> Target:
        """The same budget aimed at ``value`` (a latency landing aims lower when timings run over)."""
        return dataclasses.replace(self, value=value)

    def format(self, value: float) -> str:
        return f"{value:.2f} ms (predicted)" if self.metric == "latency" else f"{format_count(value)} {self.metric}"

    def landed(self, cost: float) -> list[str]:
        """The log line of a landing that ended at ``cost``."""
        lo, hi = self.bounds
        reached = (lo <= cost or self.metric == "latency") and cost <= hi  # latency: at or under is on target
        side = "; under the target rather than over" if cost < lo else ""
        inside = "" if reached else f", NOT reached: the structures left are too coarse{side}"
        band = f"-{1 - self.band[0]:.0%}/+0%" if self.metric == "latency" else f"± {self.tolerance:.0%}"
        return [f"budget: {self.format(cost)} after the selection ({cost / self.dense:.1%} of dense; target "
                f"{self.format(self.value)} {band}{inside})"]  # fmt: skip


def create_target(model: nn.Module, example: torch.Tensor, metric: str, value: float | str, *, round_to: int = 1,
                  tolerance: float = 0.02, latency: LatencyModel | None = None) -> Target:  # fmt: skip
    """The :class:`Target` ``value`` names on the gated ``model``: counted on ``example`` (MACs,
    parameters) or predicted by ``latency``.

    Raises:
        ValueError: ``value`` does not read as a target, is not below the dense model's cost, or
            is below the cost with every factor zero; a latency target without a ``latency`` model.
    """
    if metric == "latency":
        if latency is None:
            raise ValueError("a latency target needs a LatencyModel (sss.measure.calibrate_latency)")
        cost: Callable[[nn.Module], float] = lambda compact: latency.predict(compact, example)  # noqa: E731
    else:
        which = {"macs": 0, "params": 1}[metric]
        cost = lambda compact: count(compact, example)[which]  # noqa: E731
    with factors_restored(model) as refs:  # dense: every structure kept, also for a selection resumed with zeros
        for ref in refs:
            ref.weight.masked_fill_(ref.weight == 0, 1.0)
        dense = cost(prune(model, round_to=round_to))
    absolute = parse_latency_target(value, dense) if metric == "latency" else parse_budget(value, dense, metric)
    target = Target(metric, absolute, dense, 0.0, tolerance, cost, round_to)
    if absolute >= dense * (1 - tolerance):
        raise ValueError(f"target_{metric} {target.format(absolute)} is not below the dense model's "
                         f"{target.format(dense)}: there is nothing to remove; aim lower "
                         "(e.g. 0.5 of dense)")  # fmt: skip
    with factors_restored(model) as refs:
        for r in refs:
            r.weight.zero_()
        target = dataclasses.replace(target, floor=target.exact(model))
    floor = target.floor
    if absolute < (floor if metric == "latency" else floor * (1 + tolerance)):
        raise ValueError(f"target_{metric} {target.format(absolute)} is below what this model can reach: with "
                         f"every factor zero it keeps {target.format(floor)} ({floor / dense:.1%} of dense; "
                         "layers keep a channel, shortcuts and the head stay)")  # fmt: skip
    return target
