"""Putting scaling factors on a model's structures."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from sss.errors import UnsupportedModelError
from sss.structures.gate import KINDS, Gate
from sss.structures.residual import ResidualBlock

SUPPORTED = ("block",)


def attach(
    model: nn.Module,
    example_inputs: torch.Tensor | None = None,
    structures: Sequence[str] = ("block",),
    *,
    inplace: bool = False,
) -> nn.Module:
    """Returns ``model`` with a scaling factor λ = 1 on each chosen structure.

    Args:
        model: A model whose residual blocks are :class:`sss.structures.ResidualBlock`
            (every model of :mod:`sss.models`).
        example_inputs: Reserved for tracing arbitrary models; unused for zoo models.
        structures: Which structures get factors. This release supports ``"block"``.
        inplace: Modify ``model`` itself instead of a copy.

    Raises:
        UnsupportedModelError: A structure kind is unknown or not supported on this model.
    """
    del example_inputs  # zoo blocks declare themselves; tracing arrives with channel/group gates
    unknown = [s for s in structures if s not in KINDS]
    if unknown:
        raise ValueError(f"unknown structure kind(s) {unknown}; choose from {KINDS}")
    unsupported = [s for s in structures if s not in SUPPORTED]
    if unsupported:
        raise UnsupportedModelError(f"structure kind(s) {unsupported} are not supported yet; use structures=('block',)")
    if not inplace:
        model = copy.deepcopy(model)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    if not blocks:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no sss.structures.ResidualBlock to gate; build it from "
            "sss.models (sss.models.create) or subclass ResidualBlock in your model"
        )
    ref = next(iter(model.parameters()))
    for block in blocks:
        if not isinstance(block.gate, Gate):
            block.gate = Gate("block").to(device=ref.device, dtype=ref.dtype)
    return model
