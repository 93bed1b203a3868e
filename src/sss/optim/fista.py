"""FISTA (Beck & Teboulle 2009) for L1-penalised masks, as GAL trains its soft masks."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch.optim import Optimizer

from sss.optim.apg import evaluate_closure
from sss.optim.penalty import own_penalty


class FISTA(Optimizer):
    """Fast iterative shrinkage-thresholding with the textbook extrapolation.

    Keeps the proximal iterate ``x_k`` and steps from the extrapolated point, which is the
    parameter itself (so the forward pass that produced the gradient ran at ``y_k``)::

        x_k     = S_{ηγ}(y_k − η∇f(y_k))          [then max(·, 0) if ``nonneg``]
        t_{k+1} = (1 + sqrt(1 + 4 t_k²)) / 2
        y_{k+1} = x_k + ((t_k − 1) / t_{k+1}) (x_k − x_{k−1})   [then max(·, 0) if ``nonneg``]

    Only the smooth loss's gradient is used; the L1 term is in the prox. With ``restart``,
    the momentum resets whenever the step turns against the previous one (the gradient
    restart of O'Donoghue & Candès 2015). With ``interval`` > 1 the masks move only every
    ``interval``-th call (the official GAL code uses 200), accumulating nothing in between.

    Args:
        params: The masks.
        lr: Step size η.
        gamma: L1 strength γ (threshold ηγ).
        nonneg: Project onto masks ≥ 0 after the prox.
        restart: Adaptive gradient restart of the momentum.
        interval: Update every ``interval`` calls of :meth:`step`.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        gamma: float,
        nonneg: bool = True,
        restart: bool = False,
        interval: int = 1,
    ) -> None:
        if lr <= 0 or gamma < 0 or interval < 1:
            raise ValueError(f"need lr > 0, gamma >= 0, interval >= 1; got {lr}, {gamma}, {interval}")
        defaults = {"lr": lr, "gamma": gamma, "nonneg": nonneg, "restart": restart, "interval": interval}
        super().__init__(params, defaults)
        own_penalty(self)
        self._calls = 0

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = evaluate_closure(closure)
        self._calls += 1
        for group in self.param_groups:
            if (self._calls - 1) % group["interval"]:
                continue
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["x_prev"] = p.detach().clone()
                    state["t"] = 1.0
                x = F.softshrink(p - lr * p.grad, lr * group["gamma"])
                if group["nonneg"]:
                    x.clamp_(min=0.0)
                x_prev, t = state["x_prev"], state["t"]
                if group["restart"] and float(((p - x) * (x - x_prev)).sum()) > 0:
                    t = 1.0  # the step went uphill relative to the last one: drop the momentum
                t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
                p.copy_(x + ((t - 1) / t_next) * (x - x_prev))
                if group["nonneg"]:
                    p.clamp_(min=0.0)  # as APG: the stored (extrapolated) point stays feasible
                state["x_prev"], state["t"] = x, t_next
        return loss
