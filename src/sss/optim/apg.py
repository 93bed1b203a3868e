"""Stochastic Accelerated Proximal Gradient in momentum form (SSS eq. 10-12, "APG-NAG")."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch.optim import Optimizer

from sss.optim.penalty import own_penalty


def evaluate_closure(closure) -> torch.Tensor | None:
    """The loss of a ``step(closure)`` call, with gradients on (``None`` without a closure)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class APG(Optimizer):
    """Proximal optimizer for the L1-penalised scaling factors of SSS.

    Per step, with learning rate η, threshold ``η·gamma`` and momentum μ (the official
    code's order of operations)::

        v ← μ·v
        z ← λ' − η·∇G(λ')                 (eq. 10)
        z ← S_{ηγ}(z)                     soft threshold: the L1 prox
        v ← z − λ' + v                    (eq. 11)
        λ' ← z + μ·v                      (eq. 12)
        λ' ← max(λ', 0)                   if ``nonneg`` (official code, not in the paper)

    The gradient is that of the data loss only: the L1 term lives in the prox, so do not
    add ``γ‖λ‖₁`` to the loss. The threshold follows any change of ``lr`` by a scheduler.
    With ``momentum=0`` this is ISTA (proximal SGD), and unlike the official code it
    really updates.

    Args:
        params: The factors (no weight decay is applied to them).
        lr: Learning rate η.
        gamma: L1 strength γ.
        momentum: μ; the paper fixes 0.9.
        nonneg: Project onto λ ≥ 0 after each step.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        gamma: float,
        momentum: float = 0.9,
        nonneg: bool = True,
    ) -> None:
        if lr < 0 or gamma < 0 or not 0 <= momentum < 1:
            raise ValueError(f"need lr >= 0, gamma >= 0, 0 <= momentum < 1; got {lr}, {gamma}, {momentum}")
        super().__init__(params, {"lr": lr, "gamma": gamma, "momentum": momentum, "nonneg": nonneg})
        own_penalty(self)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                v = state["momentum_buffer"]
                z = F.softshrink(p - lr * p.grad, lr * group["gamma"])  # the prox of lr·γ·‖·‖₁: exact zeros
                v.mul_(mu).add_(z - p)
                p.copy_(z.add_(v, alpha=mu))
                if group["nonneg"]:
                    p.clamp_(min=0.0)
        return loss


class ISTA(APG):
    """Proximal SGD (ISTA): ``λ ← S_{ηγ}(λ − η∇G(λ))``, the paper's non-accelerated baseline."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, gamma: float, nonneg: bool = True) -> None:
        super().__init__(params, lr=lr, gamma=gamma, momentum=0.0, nonneg=nonneg)
