"""Putting scaling factors on a model's structures."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from sss.errors import UnsupportedModelError
from sss.structures.branches import attach_traced_branches
from sss.structures.discovery import attach_traced
from sss.structures.gate import KINDS, Gate
from sss.structures.paths import under
from sss.structures.residual import ResidualBlock
from sss.structures.traced_blocks import attach_traced_blocks


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
        model: For ``"block"``, a model with residual blocks: submodules whose forward
            adds a branch to their input (or a downsample of it), found by ``torch.fx``
            (torchvision-style, pre-activation and inverted residual blocks; see
            :mod:`sss.structures.traced_blocks`), or :class:`sss.structures.ResidualBlock`
            (the ResNets of :mod:`sss.models`, which know their removed form). For
            ``"channel"`` and ``"group"``, any model that runs on ``example_inputs``:
            Torch-Pruning traces it, every removable conv/linear output channel gets a
            factor shared by all layers coupled to it (residual sums, concat, depthwise
            convs), and every group of a grouped conv gets one (see
            :func:`sss.structures.find_structures`, which also says why a layer was skipped).
        example_inputs: An input batch; required for ``"channel"`` and ``"group"``.
        structures: Which structures get factors: any of ``"block"``, ``"group"``, ``"channel"``,
            or ``"branch"`` (one factor per branch of a module that concatenates parallel
            branches, GAL's Inception masks; see :mod:`sss.structures.branches`).
        ignore: Module paths (and everything below them) that get no factor, e.g. a layer
            whose width must stay fixed or a block that must stay.
        inplace: Modify ``model`` itself instead of a copy.

    Raises:
        UnsupportedModelError: A structure kind is unknown or not supported on this model.
    """
    unknown = [s for s in structures if s not in KINDS]
    if unknown:
        raise ValueError(f"unknown structure kind(s) {unknown}; choose from {KINDS}")
    if "branch" in structures and ({"channel", "group"} & set(structures)):
        raise UnsupportedModelError("branch factors cannot be combined with channel or group factors yet; "
                                    "use structures=('branch',) or ('block', 'branch')")  # fmt: skip
    if not inplace:
        model = copy.deepcopy(model)
    if "branch" in structures:
        if example_inputs is None:
            raise ValueError("branch factors need example_inputs (one input batch) to trace the model")
        found_branches, skipped = attach_traced_branches(model, example_inputs, ignore)
        if not found_branches:
            reasons = f" ({'; '.join(skipped)})" if skipped else ""
            raise UnsupportedModelError(
                f"{type(model).__name__} has no branch module to gate{reasons}: a branch module returns "
                "torch.cat of two or more branches of its input, each ending in a BN/conv/linear layer"
            )
        spec = getattr(model, "sss_spec", None)
        if spec is not None:
            spec["attach_input_shape"] = list(example_inputs.shape[1:])
    traced = [s for s in structures if s in ("channel", "group")]
    if traced:
        if example_inputs is None:
            raise ValueError(f"{'/'.join(traced)} factors need example_inputs (one input batch) to trace the model")
        found = attach_traced(model, example_inputs, traced, ignore)
        for kind in traced:
            if not any(g.kind == kind for g in found):
                raise UnsupportedModelError(
                    f"{type(model).__name__} has no removable {kind} structures (sss.find_structures "
                    "lists each candidate and why it was skipped)"
                )
        spec = getattr(model, "sss_spec", None)
        if spec is not None:
            spec["attach_input_shape"] = list(example_inputs.shape[1:])
    if "block" in structures:
        ref = next(iter(model.parameters()))
        blocks = [m for n, m in model.named_modules() if isinstance(m, ResidualBlock) and not under(n, ignore)]
        for block in blocks:
            if not isinstance(block.gate, Gate):
                block.gate = Gate("block").to(device=ref.device, dtype=ref.dtype)
        found_blocks, skipped = attach_traced_blocks(model, ignore)
        if not blocks and not found_blocks:
            reasons = f" ({'; '.join(skipped)})" if skipped else ""
            raise UnsupportedModelError(
                f"{type(model).__name__} has no residual block to gate{reasons}: a block is a submodule whose "
                "forward adds a branch ending in a BatchNorm/conv/linear layer to its input or a downsample of it "
                "(torch.fx must trace it), or an sss.structures.ResidualBlock"
            )
    return model
