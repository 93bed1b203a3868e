"""The selection's settings with every ``auto`` resolved, once, where a run starts."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sss.budget.importance import init_from_importance, taylor_importance
from sss.budget.magnitude import init_from_magnitudes
from sss.budget.targets import chosen_target
from sss.data import ArrayDataset, iterate_batches
from sss.train.config import TrainConfig


@dataclass(frozen=True)
class SelectionPlan:
    """How a run selects its structures: what its ``auto`` settings came to.

    Attributes:
        factor_init: ``"magnitude"``: the factors start from their structures' weight magnitudes
            (the default from trained weights: ``init`` or a dense warm-up); ``"importance"``:
            from their first-order importance per MAC, ranked over all kinds together
            (:mod:`sss.budget.importance`); ``"one"``: λ = 1.
        target: The budget's metric and value (``None``: the run selects by γ alone).
        steering: How a budget steers γ: ``"distance"`` (the default from trained weights) or
            ``"doubling"``; ``None`` without a budget.
        selection_steps: Factor steps from ``selection_start`` to the freeze (or the end).
        floor: Where the weakest structure's factor starts; ``None``: the ranking's default.
        keep: The fraction of each layer gate's strongest structures that start at 1.
    """

    factor_init: Literal["one", "magnitude", "importance"]
    target: tuple[str, float | str] | None
    steering: Literal["doubling", "distance"] | None
    selection_steps: int
    floor: float | None = None
    keep: float = 0.0

    @property
    def ranks_factors(self) -> bool:
        """Whether the factors start ranked (by magnitude or importance) instead of at 1."""
        return self.factor_init != "one"

    def start_factors(self, model: nn.Module, data: ArrayDataset, example: torch.Tensor, batch_size: int,
                      seed: int) -> None:  # fmt: skip
        """Sets ``model``'s factors where :attr:`factor_init` says, folding the inverse in (the
        same function): by magnitude, or by importance on 16 batches of ``data``."""
        spread = {"keep": self.keep} | ({} if self.floor is None else {"floor": self.floor})
        if self.factor_init == "magnitude":
            init_from_magnitudes(model, **spread)
        elif self.factor_init == "importance":
            device = next(model.parameters()).device
            batches = iterate_batches(data, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
            batches = [(x.to(device), y.to(device)) for x, y in islice(batches, 16)]
            importance = taylor_importance(model, batches, F.cross_entropy)
            init_from_importance(model, importance, example.to(device), **spread)

    @property
    def steered_by_distance(self) -> bool:
        """Whether a budget steers the factors by distance (their optimizer then has no momentum)."""
        return self.steering == "distance"


def resolve_plan(cfg: TrainConfig, train_size: int) -> SelectionPlan:
    """The :class:`SelectionPlan` of ``cfg`` for ``train_size`` training images."""
    trained = cfg.from_trained
    # From trained weights: magnitudes rank a layer's structures; with heads or the embedding width,
    # kinds whose magnitudes share no scale, importance per MAC ranks them all (vit.md: 68.8 → 73.9%).
    transformer = bool({"head", "embedding"} & set(cfg.structures))
    factor_init = cfg.factor_init if cfg.factor_init != "auto" else \
        ("importance" if transformer else "magnitude") if trained else "one"  # fmt: skip
    target = chosen_target(cfg)
    steer = cfg.steer if cfg.steer != "auto" else "distance" if trained else "doubling"
    steps = round(((cfg.freeze_epoch or cfg.epochs) - cfg.selection_start) * (train_size // cfg.batch_size))
    if cfg.freeze_epoch is not None and steps < 1 <= train_size // cfg.batch_size:  # (no batch: the loop says so)
        raise ValueError(f"the selection would take no step: freeze_epoch {cfg.freeze_epoch} of "
                         f"{train_size // cfg.batch_size} steps per epoch rounds to none after selection_start "
                         f"{cfg.selection_start}; set a later freeze_epoch")  # fmt: skip
    if cfg.keep_fraction and factor_init == "one":  # checked here: ``auto`` resolves only with the whole config
        raise ValueError(
            "keep_fraction holds part of a ranked start at 1, and these factors all start at 1: set factor_init "
            "magnitude or importance, or start from trained weights (init or selection_start), where auto ranks"
        )
    return SelectionPlan(
        factor_init, target, steer if target is not None else None, steps, cfg.factor_floor, cfg.keep_fraction
    )
