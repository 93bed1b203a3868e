"""The block kind: one factor per residual block, removing whole blocks (the network's depth).

Two sources of blocks: the zoo's :class:`~sss.structures.residual.ResidualBlock` subclasses,
which declare their branch, shortcut and removed form, and any other submodule whose
``torch.fx`` graph is a residual block (:mod:`sss.structures.traced_blocks`). Both are removed
in one step after the channel cuts, so a kept shortcut has already lost its cut channels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from sss.structures.gate import ChannelGated, Gate
from sss.structures.paths import under
from sss.structures.registry import Discovery, Edit, Removal, StructureKind, register_kind
from sss.structures.residual import ResidualBlock
from sss.structures.traced_blocks import compact_traced_block, gate_block, is_traced_block, removed_traced_block


def replace_blocks(model: nn.Module, replacement: dict[str, nn.Module | None]) -> None:
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
            if not parent_name:
                raise ValueError("the model itself is a Sequential of blocks; wrap it in a module")
            kept = OrderedDict()
            for child_name, child in parent.named_children():
                new = children.get(child_name, child)
                if new is not None:
                    kept[child_name] = new
            model.set_submodule(parent_name, nn.Sequential(kept))
        else:
            for child_name, new in children.items():
                setattr(parent, child_name, nn.Identity() if new is None else new)


class BlockKind(StructureKind):
    """One factor per residual block; a zero block becomes its shortcut (or nothing)."""

    name = "block"
    order = 30
    min_keep = 0
    needs_example = False
    check_exactness = False  # the removed form is the block's own shortcut path: exact by construction
    ops = ("remove_block",)
    not_found = (
        "residual block to gate: a block is a submodule whose forward adds a branch ending in a "
        "BatchNorm/conv/linear layer to its input or a downsample of it (torch.fx must trace it), "
        "or an sss.structures.ResidualBlock"
    )

    def find(
        self, model: nn.Module, example_inputs: torch.Tensor | None, ignore: Sequence[str], discovery: Discovery
    ) -> tuple[list[str], list[str]]:
        """Blocks top-down: a module that is a block is not searched inside."""
        ref = next(iter(model.parameters()))
        found, skipped, done = [], [], list(ignore)
        for name, module in model.named_modules():
            if not name or under(name, done):
                continue
            if isinstance(module, ResidualBlock):
                found.append(name)
                done.append(name)
                continue
            if isinstance(module, ChannelGated | nn.Sequential | nn.ModuleList) or not any(module.children()):
                continue
            gated = gate_block(module, ref.device, ref.dtype)
            if isinstance(gated, str):
                if not gated.startswith("it has "):  # not a residual block at all, or a container of blocks
                    skipped.append(f"{name}: {gated}")
                continue
            found.append(name)
            done.append(name)
        return found, skipped

    def gate(self, model: nn.Module, candidates: Sequence[str]) -> None:
        ref = next(iter(model.parameters()))
        for name in candidates:
            module = model.get_submodule(name)
            if isinstance(module, ResidualBlock):
                if not isinstance(module.gate, Gate):
                    module.gate = Gate("block").to(device=ref.device, dtype=ref.dtype)
            else:
                model.set_submodule(name, gate_block(module, ref.device, ref.dtype))

    def plan(self, model: nn.Module, remove: bool, round_to: int, removal: Removal) -> None:
        removal.steps.append(lambda m: self._compact(m, remove))

    def _compact(self, model: nn.Module, remove: bool) -> list[Edit]:
        threshold = 0.0 if remove else -1.0  # -1: no factor counts as zero
        zoo = {n: m for n, m in model.named_modules() if isinstance(m, ResidualBlock) and m.factor() is not None}
        replacement = {name: block.compact(threshold) for name, block in zoo.items()}
        removed = [name for name, new in replacement.items() if not isinstance(new, ResidualBlock)]
        replace_blocks(model, replacement)
        for name, m in list(model.named_modules()):
            if is_traced_block(m):
                if float(m.gate.weight.detach().abs().max()) <= threshold:
                    removed.append(name)
                compact_traced_block(m, threshold)
        return [{"op": "remove_block", "path": name} for name in sorted(removed)]

    def replay(self, model: nn.Module, edit: Edit) -> None:
        block = model.get_submodule(edit["path"])
        form = block.removed_form() if isinstance(block, ResidualBlock) else removed_traced_block(block)
        replace_blocks(model, {edit["path"]: form})


register_kind(BlockKind())
