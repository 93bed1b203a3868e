"""The budget targets a run can aim at, and how their values read: the one place that knows them.

``target_macs`` and ``target_params`` take a fraction of the dense model (``0.5``) or a count
(``18M``, ``250k``, ``2.5e6``); ``target_latency`` takes milliseconds (``2.5``) or a fraction
of the dense model's latency (``"0.7x"``). A run has at most one.
"""

from __future__ import annotations

import re
from typing import Any

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
