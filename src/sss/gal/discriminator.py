"""The discriminator that tells the teacher's logits from the pruned student's."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Discriminator(nn.Module):
    """An MLP on logits with LeakyReLU between its layers and one logit out (real = teacher).

    GAL's paper describes three hidden layers of 128-256-128 units. The official code omits
    the nonlinearities (so it is logistic regression on the logits) and applies a sigmoid
    before a with-logits loss (so its probabilities never drop below 0.5); neither is copied.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (128, 256, 128), *, official: bool = False) -> None:
        """``official=True`` rebuilds the official code's D for parity runs: no nonlinearities,
        and a sigmoid on the output that the with-logits loss then applies again."""
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h)] + ([] if official else [nn.LeakyReLU(0.2, inplace=True)])
            width = h
        layers.append(nn.Linear(width, 1))
        if official:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.net(logits).squeeze(-1)
