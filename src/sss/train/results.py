"""What the training loop hands back: one batch's loss and a finished run's models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

import torch
from torch import nn


class EpochRecord(TypedDict, total=False):
    """One line of ``metrics.jsonl``: an epoch's figures (``total=False``: a subclass's
    :class:`BatchResult` figures, such as GAL's ``d_loss``, are added under their own names)."""

    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    zero_factors: int
    factors: int
    compact_macs: int
    dense_macs: int
    seconds: float


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
    history: list[EpochRecord] = field(default_factory=list)
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
