"""What the training loop hands back: one batch's loss and a finished run's models."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class TrainResult:
    """What a finished run leaves.

    ``model`` is the trained model (gated, or already compact after a freeze), ``compact`` its
    compact form, and ``selected`` the gated model at the moment of a freeze (``None`` without
    one): the model whose removal the freeze performed, for exactness checks and reports.
    """

    model: nn.Module
    compact: nn.Module
    selected: nn.Module | None = None
    history: list[dict] = field(default_factory=list)
    factor_trace: list[dict] = field(default_factory=list)


@dataclass
class BatchResult:
    """What :meth:`Trainer.batch_loss` returns for one batch.

    ``loss`` is what :meth:`Trainer.optimizer_step` minimises; the epoch's "train" accuracy
    compares ``logits.argmax(1)`` with ``targets``; ``figures`` are further per-batch numbers
    (a discriminator's loss, say) whose epoch means go into the log line and the metrics.
    Every number is checked for NaN/inf before the step.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    figures: dict[str, float] = field(default_factory=dict)
