"""Putting scaling factors on a model's structures."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from sss.errors import UnsupportedModelError
from sss.structures.channels import attach_channel_gates
from sss.structures.gate import KINDS, Gate
from sss.structures.residual import ResidualBlock

SUPPORTED = ("block", "channel")


def attach(
    model: nn.Module,
    example_inputs: torch.Tensor | None = None,
    structures: Sequence[str] = ("block",),
    *,
    ignore: Sequence[str] = (),
    inplace: bool = False,
) -> nn.Module:
    """Returns ``model`` with a scaling factor λ = 1 on each chosen structure.

    Args:
        model: For ``"block"``, a model whose residual blocks are
            :class:`sss.structures.ResidualBlock` (the ResNets of :mod:`sss.models`). For
            ``"channel"``, any model ``torch.fx`` can trace: every conv/linear output that
            reaches a single conv/linear layer through BN, activation, pooling or flatten
            gets one factor per channel (see :mod:`sss.structures.channels`).
        example_inputs: An input batch; required for ``"channel"`` (shapes are traced).
        structures: Which structures get factors: ``"block"``, ``"channel"`` or both.
        ignore: Module paths (and everything below them) that get no factor, e.g. a layer
            whose width must stay fixed or a block that must stay.
        inplace: Modify ``model`` itself instead of a copy.

    Raises:
        UnsupportedModelError: A structure kind is unknown or not supported on this model.
    """
    unknown = [s for s in structures if s not in KINDS]
    if unknown:
        raise ValueError(f"unknown structure kind(s) {unknown}; choose from {KINDS}")
    unsupported = [s for s in structures if s not in SUPPORTED]
    if unsupported:
        raise UnsupportedModelError(
            f"structure kind(s) {unsupported} are not supported yet; use 'block' and/or 'channel'"
        )
    if not inplace:
        model = copy.deepcopy(model)
    if "channel" in structures:
        if example_inputs is None:
            raise ValueError("channel factors need example_inputs (one input batch) to trace the model")
        if not attach_channel_gates(model, example_inputs, ignore):
            raise UnsupportedModelError(f"{type(model).__name__} has no removable channels (see find_channel_sites)")
        spec = getattr(model, "sss_spec", None)
        if spec is not None:
            spec["attach_input_shape"] = list(example_inputs.shape[1:])
    if "block" in structures:
        blocks = [m for n, m in model.named_modules() if isinstance(m, ResidualBlock) and not _ignored(n, ignore)]
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


def _ignored(path: str, ignore: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in ignore)
