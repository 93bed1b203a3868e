"""The selection's settings with every ``auto`` resolved, once, where a run starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sss.budget.targets import chosen_target
from sss.train.config import TrainConfig


@dataclass(frozen=True)
class SelectionPlan:
    """How a run selects its structures: what its ``auto`` settings came to.

    Attributes:
        factor_init: ``"magnitude"``: the factors start from their structures' weight magnitudes
            (the default from trained weights: ``init`` or a dense warm-up); ``"one"``: λ = 1.
        target: The budget's metric and value (``None``: the run selects by γ alone).
        steering: How a budget steers γ: ``"distance"`` (the default from trained weights) or
            ``"doubling"``; ``None`` without a budget.
        selection_steps: Factor steps from ``selection_start`` to the freeze (or the end).
    """

    factor_init: Literal["one", "magnitude"]
    target: tuple[str, float | str] | None
    steering: Literal["doubling", "distance"] | None
    selection_steps: int

    @property
    def from_magnitudes(self) -> bool:
        """Whether the factors start from their structures' weight magnitudes."""
        return self.factor_init == "magnitude"

    @property
    def steered_by_distance(self) -> bool:
        """Whether a budget steers the factors by distance (their optimizer then has no momentum)."""
        return self.steering == "distance"


def resolve_plan(cfg: TrainConfig, train_size: int) -> SelectionPlan:
    """The :class:`SelectionPlan` of ``cfg`` for ``train_size`` training images."""
    trained = cfg.from_trained
    factor_init = cfg.factor_init if cfg.factor_init != "auto" else "magnitude" if trained else "one"
    target = chosen_target(cfg)
    steer = cfg.steer if cfg.steer != "auto" else "distance" if trained else "doubling"
    steps = ((cfg.freeze_epoch or cfg.epochs) - cfg.selection_start) * (train_size // cfg.batch_size)
    return SelectionPlan(factor_init, target, steer if target is not None else None, steps)
