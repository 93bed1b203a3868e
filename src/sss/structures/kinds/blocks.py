"""The block kind: one factor per residual block, removing whole blocks (the network's depth).

Two sources of blocks: the zoo's :class:`~sss.structures.residual.ResidualBlock` subclasses,
which declare their branch, shortcut and removed form, and any other submodule whose
``torch.fx`` graph is a residual block (:mod:`sss.structures.kinds.traced_blocks`). Both are removed
in one step after the channel cuts, so a kept shortcut has already lost its cut channels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from sss.structures.gate import ChannelGated, Gate
from sss.structures.kinds.called_blocks import (
    CalledBlock,
    called_block,
    compact_called_block,
    fixes_arguments,
    gate_called_block,
    is_called_block,
    is_compact_called_block,
    remove_branches,
)
from sss.structures.kinds.traced_blocks import compact_traced_block, gate_block, is_traced_block, removed_traced_block
from sss.structures.paths import under
from sss.structures.registry import Discovery, Edit, Removal, StructureKind, register_kind
from sss.structures.residual import ResidualBlock
from sss.structures.torch_transformer import EncoderStack
from sss.structures.tracing import shared_modules


def replace_blocks(model: nn.Module, replacement: dict[str, nn.Module | None]) -> None:
    """Swaps each named block for its replacement; ``None`` drops it from its container.

    Blocks dropped from an ``nn.Sequential`` leave it (keeping the surviving
    blocks' original names, so ``layer1.2.branch.0.weight`` still names the same tensor);
    elsewhere a dropped block becomes ``nn.Identity``.
    """
    by_parent: dict[str, dict[str, nn.Module | None]] = {}
    for name, new in replacement.items():
        parent, _, child = name.rpartition(".")
        by_parent.setdefault(parent, {})[child] = new
    for parent_name, children in by_parent.items():
        parent = model.get_submodule(parent_name)
        if isinstance(parent, nn.Sequential) and any(new is None for new in children.values()):
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


def _reads_features(args: tuple, kwargs: dict) -> bool:
    """Whether a call's first tensor is floating point: a block adds a branch to features; token
    ids (RoBERTa's embeddings, whose position ids read the ids' values) have none to add to."""
    first = next((v for v in [*args, *kwargs.values()] if isinstance(v, torch.Tensor)), None)
    return first is None or first.is_floating_point()


#: Modules searched inside, never gated whole.
CONTAINERS = (ChannelGated, nn.Sequential, nn.ModuleList, EncoderStack)


class BlockKind(StructureKind):
    """One factor per residual block; a zero block becomes its shortcut (or nothing)."""

    name = "block"
    order = 30
    min_keep = 0
    coarse = True
    needs_example = False  # the zoo's ResidualBlocks declare their removed form; traced blocks need one
    ops = ("remove_block",)
    not_found = (
        "residual block to gate: a block is a submodule whose forward adds a branch ending in a "
        "BatchNorm/conv/linear/affine LayerNorm layer (maybe then dropout, stochastic depth, a layout op or a "
        "scale by a constant) to its input or a downsample of it (torch.fx must trace it, alone or as it is "
        "called), or an sss.structures.ResidualBlock"
    )

    def find(
        self, model: nn.Module, example_inputs: torch.Tensor | None, ignore: Sequence[str], discovery: Discovery
    ) -> tuple[list[str], list[str]]:
        """Blocks top-down: a module that is a block is not searched inside. A block holding a
        module that also stands elsewhere (one BatchNorm in two blocks) is refused: its factor
        would be folded into the other place too."""
        ref = next(iter(model.parameters()))
        found, skipped, done = [], [], list(ignore)
        shared = {path: paths for paths in shared_modules(model).values() for path in paths}
        for name, module in model.named_modules():
            if not name or under(name, done):
                continue
            if not isinstance(module, ResidualBlock):
                # containers: their blocks are the blocks (a stack of pre-norm layers would trace as one)
                if isinstance(module, CONTAINERS) or not any(module.children()):
                    continue
                if is_compact_called_block(module):  # its class's code still calls the removed branches
                    skipped.append(f"{name}: sss.prune removed or scaled its branches; it is not gated again")
                    done.append(name)
                    continue
                gated = gate_block(module, ref.device, ref.dtype)
                call = discovery.first_calls.get(name) if example_inputs is not None else None
                if call is not None and not _reads_features(*call):
                    skipped.append(f"{name}: its input is token ids, not features a residual branch adds to")
                    continue
                # a Hugging Face layer: torch.fx cannot trace it alone, or traces its None, flags and
                # options as inputs (a path none of its calls takes); traced as it is called instead
                if isinstance(gated, str) and call is not None and (
                        gated.startswith("torch.fx cannot trace it") or fixes_arguments(*call)):  # fmt: skip
                    gated = called_block(name, module, *call)
                if isinstance(gated, CalledBlock):
                    name = gated
                elif isinstance(gated, str):
                    if not gated.startswith("it has "):  # not a residual block at all, or a container of blocks
                        skipped.append(f"{name}: {gated}")
                    continue
            done.append(name)
            inside = [p for p in shared if under(p, [name])]
            if inside:
                others = [o for o in shared[inside[0]] if o != inside[0]]
                skipped.append(f"{name}: its {inside[0]} is the same module as {others[0]}; a block's factor folds "
                               "into its own layers, so give each block modules of its own")  # fmt: skip
                continue
            if example_inputs is None and not isinstance(module, ResidualBlock):
                raise ValueError(
                    f"{name} is a residual block found by tracing; block factors on such blocks need "
                    "example_inputs (one input batch), so that removing each block is checked to be exact"
                )
            found.append(name)
        return found, skipped

    def gate(self, model: nn.Module, candidates: Sequence[str]) -> None:
        ref = next(iter(model.parameters()))
        for name in candidates:
            module = model.get_submodule(name)
            if isinstance(module, ResidualBlock):
                if not isinstance(module.gate, Gate):
                    module.gate = Gate("block").to(device=ref.device, dtype=ref.dtype)
            elif isinstance(name, CalledBlock):
                gate_called_block(module, name.template, ref.device, ref.dtype)
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
        edits: list[Edit] = [{"op": "remove_block", "path": name} for name in removed]
        for name, m in list(model.named_modules()):
            # a branch that ends in no layer to fold λ into keeps it as a scale (an edit, if no branch is dropped)
            scaled: list[int] = []
            if is_called_block(m):  # a Hugging Face layer: its removed branches' modules are replaced
                dropped, stand_ins, scaled = compact_called_block(m, threshold)
                if dropped or scaled:
                    edits.append({"op": "remove_block", "path": name, "branches": dropped, "modules": stand_ins})
            elif is_traced_block(m):
                branches = m.gate.weight.numel()
                dropped, scaled = compact_traced_block(m, threshold)
                if dropped == [0] and branches == 1:
                    edits.append({"op": "remove_block", "path": name})
                elif dropped or scaled:  # some branches of a block with several (a transformer's attention, MLP)
                    edits.append({"op": "remove_block", "path": name, "branches": dropped})
            if scaled:
                edits[-1]["scaled"] = scaled
        return sorted(edits, key=lambda e: e["path"])

    def replay(self, model: nn.Module, edit: Edit) -> None:
        block = model.get_submodule(edit["path"])
        if "modules" in edit:  # a called block (Hugging Face's layers): it stays, without its removed branches
            remove_branches(block, edit["branches"], edit["modules"], edit.get("scaled", []))
            return
        traced = not isinstance(block, ResidualBlock)
        form = (removed_traced_block(block, edit.get("branches"), edit.get("scaled", ())) if traced
                else block.removed_form())  # fmt: skip
        replace_blocks(model, {edit["path"]: form})


register_kind(BlockKind())
