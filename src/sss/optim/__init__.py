"""Optimizers for the scaling factors (APG, ISTA, L1-subgradient SGD) and the weights."""

from sss.optim.apg import APG, ISTA
from sss.optim.fista import FISTA
from sss.optim.l1sgd import L1SGD
from sss.optim.param_groups import build_optimizers, factor_param_groups, weight_param_groups
from sss.optim.penalty import base_penalties, set_penalty_scale

__all__ = [
    "APG",
    "FISTA",
    "ISTA",
    "L1SGD",
    "base_penalties",
    "build_optimizers",
    "factor_param_groups",
    "set_penalty_scale",
    "weight_param_groups",
]
