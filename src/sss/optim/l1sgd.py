"""SGD with an L1 subgradient: the paper's baseline that needs a threshold to prune."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import SGD

from sss.optim.penalty import own_penalty


class L1SGD(SGD):
    """Momentum SGD on ``G(λ) + γ‖λ‖₁`` using the subgradient ``γ·sign(λ)``.

    It produces no exact zeros; prune with a threshold
    (``sss.prune(model, threshold=...)`` after :func:`sss.zero_small_factors`).
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, gamma: float, momentum: float = 0.9) -> None:
        super().__init__(params, lr=lr, momentum=momentum)
        for group in self.param_groups:
            group.setdefault("gamma", gamma)
        own_penalty(self)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.add_(torch.sign(p), alpha=group["gamma"])
        return super().step(closure)
