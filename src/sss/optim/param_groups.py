"""Optimizers for a gated model: Nesterov SGD for the weights, a proximal method for λ."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from torch import nn
from torch.optim import SGD, Optimizer

from sss.optim.apg import APG, ISTA
from sss.optim.l1sgd import L1SGD
from sss.structures.gate import Gate, gates
from sss.structures.tracing import DECAYED

SparsityMethod = Literal["apg", "ista", "sgd"]


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
            (decay if pname == "weight" and isinstance(module, DECAYED) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def factor_param_groups(
    model: nn.Module, gamma: float | Mapping[str, float], weights: Mapping[str, float] | None = None
) -> list[dict]:
    """The factors as optimizer param groups, one per structure kind, each with its own γ.

    ``gamma`` is one value for every kind (the paper's joint ResNeXt setting) or a mapping
    ``{kind: γ}``; a kind missing from the mapping raises, so no factor trains unpenalised.
    ``weights`` (gate name → multiplier, e.g. :func:`sss.measure.mac_weights`) gives each
    gate its own group with γ scaled by its multiplier.
    """
    groups: dict[str, dict] = {}
    for ref in gates(model):
        if isinstance(gamma, Mapping) and ref.kind not in gamma:
            raise ValueError(f"gamma gives no value for the {ref.kind!r} factors; add {ref.kind}: <γ>")
        g = gamma[ref.kind] if isinstance(gamma, Mapping) else gamma
        key = ref.kind if weights is None else ref.name
        group = groups.setdefault(key, {"params": [], "gamma": g if weights is None else g * weights[ref.name]})
        group["params"].append(ref.weight)
    return list(groups.values())


def build_optimizers(
    model: nn.Module,
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    method: SparsityMethod = "apg",
    gamma: float | Mapping[str, float] = 0.01,
    gamma_weights: Mapping[str, float] | None = None,
    steered_by_distance: bool = False,
) -> tuple[Optimizer, Optimizer | None]:
    """Returns ``(weights optimizer, factors optimizer)`` for a gated model.

    The weights get Nesterov SGD (exactly MXNet's NAG). The factors get ``method``: APG
    (the paper's), ISTA, or SGD with an L1 subgradient. Both share ``lr`` so that one
    schedule drives both, as in the official code. A model without gates gets ``None``.
    ``gamma`` is one L1 strength, or one per structure kind (``{"block": 0.1, "channel": 0.01}``);
    ``gamma_weights`` scales it per gate (see :func:`factor_param_groups`). Each group keeps that
    γ as its base; a budget scales it through :func:`~sss.optim.penalty.set_penalty_scale` only.
    ``steered_by_distance``: a budget steers the factors along a path (``steer: distance``), so
    the factors get no momentum, which would carry them past it.
    """
    weights = SGD(weight_param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=True)
    factors = factor_param_groups(model, gamma, gamma_weights)
    if not factors:
        return weights, None
    # Each group carries its γ; the constructor's value only fills groups that have none.
    factor_momentum = 0.0 if steered_by_distance else momentum
    if method == "apg":
        return weights, APG(factors, lr=lr, gamma=0.0, momentum=factor_momentum)
    if method == "ista":
        return weights, ISTA(factors, lr=lr, gamma=0.0)
    if method == "sgd":
        return weights, L1SGD(factors, lr=lr, gamma=0.0, momentum=factor_momentum)
    raise ValueError(f"unknown sparsity method {method!r}; use apg, ista or sgd")
