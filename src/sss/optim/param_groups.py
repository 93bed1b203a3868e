"""Optimizers for a gated model: Nesterov SGD for the weights, a proximal method for λ."""

from __future__ import annotations

from typing import Literal

from torch import nn
from torch.optim import SGD, Optimizer

from sss.optim.apg import APG, ISTA
from sss.optim.l1sgd import L1SGD
from sss.structures.gate import Gate

SparsityMethod = Literal["apg", "ista", "sgd"]
_DECAYED = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


def weight_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Splits the non-factor parameters into a decayed and an undecayed group.

    As the official code (MXNet ``set_wd_mult``): conv/linear weights and BN γ are decayed;
    biases, BN β and the factors are not (factors are excluded entirely).
    """
    decay, no_decay = [], []
    for module in model.modules():
        if isinstance(module, Gate):
            continue
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (decay if pname == "weight" and isinstance(module, _DECAYED) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizers(
    model: nn.Module,
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    method: SparsityMethod = "apg",
    gamma: float = 0.01,
) -> tuple[Optimizer, Optimizer | None]:
    """Returns ``(weights optimizer, factors optimizer)`` for a gated model.

    The weights get Nesterov SGD (exactly MXNet's NAG). The factors get ``method``: APG
    (the paper's), ISTA, or SGD with an L1 subgradient. Both share ``lr`` so that one
    schedule drives both, as in the official code. A model without gates gets ``None``.
    """
    weights = SGD(weight_param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=True)
    factors = [p for m in model.modules() if isinstance(m, Gate) for p in m.parameters()]
    if not factors:
        return weights, None
    if method == "apg":
        return weights, APG(factors, lr=lr, gamma=gamma, momentum=momentum)
    if method == "ista":
        return weights, ISTA(factors, lr=lr, gamma=gamma)
    if method == "sgd":
        return weights, L1SGD(factors, lr=lr, gamma=gamma, momentum=momentum)
    raise ValueError(f"unknown sparsity method {method!r}; use apg, ista or sgd")
