"""``sss.prune``: turn a gated model into a plain, smaller ``nn.Module``."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from sss.structures.branches import compact_branches
from sss.structures.channels import prune_channels
from sss.structures.gate import KINDS, gates
from sss.structures.residual import ResidualBlock
from sss.structures.traced_blocks import compact_traced_block, is_traced_block
from sss.surgery.shapes import layer_shapes


def _replace_blocks(model: nn.Module, replacement: dict[str, nn.Module | None]) -> None:
    """Swaps each named block for its replacement; ``None`` drops it from its container.

    Blocks that live in an ``nn.Sequential`` are dropped from it (keeping the surviving
    blocks' original names, so ``layer1.2.branch.0.weight`` still names the same tensor);
    elsewhere a dropped block becomes ``nn.Identity``.
    """
    by_parent: dict[str, dict[str, nn.Module | None]] = {}
    for name, new in replacement.items():
        parent, _, child = name.rpartition(".")
        by_parent.setdefault(parent, {})[child] = new
    for parent_name, children in by_parent.items():
        parent = model.get_submodule(parent_name)
        if isinstance(parent, nn.Sequential):
            kept = OrderedDict()
            for child_name, child in parent.named_children():
                new = children.get(child_name, child)
                if new is not None:
                    kept[child_name] = new
            rebuilt = nn.Sequential(kept)
            if parent_name:
                model.set_submodule(parent_name, rebuilt)
            else:
                raise ValueError("the model itself is a Sequential of blocks; wrap it in a module")
        else:
            for child_name, new in children.items():
                setattr(parent, child_name, nn.Identity() if new is None else new)


def remove_blocks(model: nn.Module, names: list[str]) -> None:
    """Replaces the named residual blocks by their removed form, in place (no weights needed)."""
    forms = {}
    for name in names:
        block = model.get_submodule(name)
        if not isinstance(block, ResidualBlock):
            raise ValueError(f"{name} is a {type(block).__name__}, not a residual block")
        forms[name] = block.removed_form()
    _replace_blocks(model, forms)


def prune(
    model: nn.Module, threshold: float = 0.0, *, round_to: int = 1, structures: Sequence[str] = KINDS
) -> nn.Module:
    """Returns a plain copy of ``model`` without the structures whose factor is zero.

    Channels with ``|λ| <= threshold`` lose their filter, BN entry and the consumer's input
    slice; blocks are replaced by what remains of them (nothing, or their shortcut).
    Surviving factors are folded into the weights, so the result has no gates
    and computes the same function as the gated model (up to float rounding). ``model``
    is left unchanged.

    Args:
        model: A gated model (see :func:`sss.attach`).
        threshold: Factors at or below this magnitude count as zero. Keep 0 for APG/ISTA,
            whose zeros are exact; the L1-subgradient SGD baseline needs a positive one.
        round_to: Keep channel counts a multiple of this (extra channels keep a zero factor).
        structures: The kinds to remove (default: all). The factors of other kinds are folded
            into the weights and their structures stay, zero or not.
    """
    was_training = model.training
    compact = copy.deepcopy(model).eval()
    prune_channels(compact, threshold, round_to, kinds=structures)
    block_threshold = threshold if "block" in structures else -1.0  # -1: nothing counts as zero
    blocks = {n: m for n, m in compact.named_modules() if isinstance(m, ResidualBlock) and m.factor() is not None}
    replacement = {name: block.compact(block_threshold) for name, block in blocks.items()}
    removed = [name for name, new in replacement.items() if new is None or not isinstance(new, ResidualBlock)]
    _replace_blocks(compact, replacement)
    for m in list(compact.modules()):
        if is_traced_block(m):
            compact_traced_block(m, block_threshold)
    dropped = compact_branches(compact, threshold if "branch" in structures else -1.0)
    leftover = gates(compact)
    if leftover:
        raise NotImplementedError(f"cannot fold gate(s) {[g.name for g in leftover]} of this kind yet")
    spec = getattr(model, "sss_spec", None)
    if spec is not None:
        compact.sss_spec = {
            **spec, "removed": sorted(set(spec.get("removed", [])) | set(removed)), "shapes": layer_shapes(compact)
        }  # fmt: skip
        if any(dropped.values()):
            compact.sss_spec["dropped_branches"] = {**spec.get("dropped_branches", {}), **dropped}
        compact.sss_spec.pop("attach_input_shape", None)
    return compact.train(was_training)


@torch.no_grad()
def zero_small_factors(model: nn.Module, threshold: float) -> int:
    """Sets every factor with ``|λ| <= threshold`` to exactly 0, in place; returns how many.

    This is the pruning threshold of the L1-subgradient SGD baseline, which produces no
    exact zeros by itself. Apply it before evaluating, so that the gated model that is
    measured is the one that :func:`prune` makes smaller.
    """
    count = 0
    for ref in gates(model):
        small = ref.weight.abs() <= threshold
        ref.weight[small] = 0.0
        count += int(small.sum())
    return count
