"""Training callbacks: what the loop calls at the points where a method steers the selection.

A callback is one object with a ``name`` and up to four methods; the :class:`~sss.train.Trainer`
dispatches them and checkpoints each one's state under its name, so a resumed run continues
it. The budget controller (:class:`sss.train.budget.BudgetCallback`) is one; a user's own
(a schedule for γ, a logger of factors) is passed as ``Trainer(cfg, callbacks=[...])``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from sss.data import ArrayDataset
from sss.train.config import TrainConfig
from sss.train.runtime import Runtime


class TrainerState(Protocol):
    """What a callback may read of the :class:`~sss.train.Trainer` that calls it (a protocol,
    so that this module need not import the loop that imports it)."""

    cfg: TrainConfig
    model: nn.Module
    factors_opt: torch.optim.Optimizer | None
    train_data: ArrayDataset
    example: torch.Tensor
    runtime: Runtime
    log: Callable[[str], None]

    @property
    def selecting(self) -> bool:
        """Whether the factors train now."""
        ...


class Callback:
    """Hooks of the training loop (each a no-op by default).

    Attributes:
        name: The key of this callback's state in the checkpoint (unique in a run).
    """

    name: str = "callback"

    def on_factor_step(self, trainer: TrainerState) -> None:
        """After each step of the factors' optimizer, during the selection."""

    def on_epoch_end(self, trainer: TrainerState) -> None:
        """After each training epoch, before the model is validated and checkpointed."""

    def on_selection_end(self, trainer: TrainerState) -> None:
        """Once, where the selection ends: before the freeze, or at the end of a run without one.
        The factors may be changed here; the model that is then pruned is the gated one as it is."""

    def state_dict(self) -> dict:
        """What a checkpoint keeps of this callback (tensors, numbers, strings, dicts, lists)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restores what :meth:`state_dict` returned."""
