"""Branch factors: one per branch of a module whose output concatenates parallel branches.

This is GAL's mask on GoogLeNet's Inception branches. A module is a *branch module* when its
``torch.fx`` graph returns ``torch.cat([b_1, ..., b_n], dim=1)`` of n ≥ 2 branches that come
from its input along disjoint paths, each ending in a BN/conv/linear layer (then, optionally,
a ReLU). The module becomes its ``GraphModule`` with a :class:`BranchGate` (``.gate``):
``cat([λ_1·b_1, ..., λ_n·b_n])``. Removing branch ``i`` drops it from the concat (its layers
go with dead-code elimination) and cuts its channels from the layers that read the module's
output, found with Torch-Pruning as for channels. A surviving λ is folded into the branch's
last affine layer (exact through ReLU for λ ≥ 0). A module keeps at least one branch.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import fx, nn

from sss.structures.gate import Gate, fold_output_scale
from sss.structures.kinds.channels import LayerSlice, describe
from sss.structures.paths import under
from sss.structures.registry import Discovery, Edit, Removal, StructureKind, register_kind
from sss.structures.tracing import (
    AFFINE,
    LAYERS,
    ancestors,
    eliminate_dead_code,
    out_width,
    trace_and_find,
    trace_module,
)


class BranchGate(Gate):
    """One factor per branch, with what removal needs: the layer each λ folds into (a path
    inside the module) and the slices of outside layers that read each branch's channels."""

    def __init__(self, fold_into: Sequence[str], readers: Sequence[Sequence[LayerSlice]]) -> None:
        super().__init__("branch", len(fold_into))
        self.fold_into, self.readers = list(fold_into), [list(r) for r in readers]


def _concat(gm: fx.GraphModule) -> tuple[fx.Node, list[fx.Node]] | str:
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if not (isinstance(out, fx.Node) and out.op == "call_function" and out.target is torch.cat):
        return "its output is not a concat"
    tensors, dim = out.args[0], out.args[1] if len(out.args) > 1 else out.kwargs.get("dim", 0)
    if dim != 1 or not isinstance(tensors, list | tuple) or len(tensors) < 2:
        return "its output is not a channel concat of two or more branches"
    return out, list(tensors)


def _last_affine(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The BN/conv/linear call that ends a branch, looking through a trailing ReLU."""
    while (node.op == "call_module" and isinstance(modules[node.target], nn.ReLU)) or (
        node.op == "call_function" and node.target in (torch.relu, nn.functional.relu)
    ):
        node = node.args[0]
    return node if node.op == "call_module" and isinstance(modules[node.target], AFFINE) else None


def _describe_module(model, path, module, graph, names, calls) -> tuple[list[str], list[list[LayerSlice]]] | str:
    traced = trace_and_find(module, _concat)
    if isinstance(traced, str):
        return traced
    gm, (_, tensors) = traced
    modules = dict(gm.named_modules())
    owned = [ancestors(t) | {t} for t in tensors]
    x = next(n for n in gm.graph.nodes if n.op == "placeholder")
    fold_into, readers = [], []
    for i, t in enumerate(tensors):
        last = _last_affine(t, modules)
        if last is None or any(owned[i] & owned[j] - {x} for j in range(len(tensors)) if j != i):
            return f"branch {i} does not end in its own BN/conv/linear layer"
        producer = last if isinstance(modules[last.target], LAYERS) else last.args[0]
        conv = modules.get(producer.target) if producer.op == "call_module" else None
        if not isinstance(conv, LAYERS):
            return f"branch {i} has no conv/linear layer before its last BN"
        prune_out = tp.prune_linear_out_channels if isinstance(conv, nn.Linear) else tp.prune_conv_out_channels
        group = describe(graph, graph.get_pruning_group(conv, prune_out, list(range(out_width(conv)))), names, calls)
        if isinstance(group, str):
            return f"branch {i}: {group}"
        outside = [s for s in group.slices if not under(s.path, [path])]
        if any(s.role == "out" and isinstance(model.get_submodule(s.path), LAYERS) for s in outside):
            return f"branch {i}'s channels are summed with layers outside the module"
        fold_into.append(last.target)
        readers.append([LayerSlice(s.path, s.role, (tuple(sorted({k for ix in s.index for k in ix})),))
                        for s in outside])  # fmt: skip
    return fold_into, readers


def _gate(module: nn.Module, gate: BranchGate) -> fx.GraphModule:
    gm = trace_module(module)
    cat, tensors = _concat(gm)
    gm.add_submodule("gate", gate)
    with gm.graph.inserting_before(cat):
        weight = gm.graph.get_attr("gate.weight")
        scaled = [gm.graph.call_function(operator.mul, (t, gm.graph.call_function(operator.getitem, (weight, i))))
                  for i, t in enumerate(tensors)]  # fmt: skip
    cat.args = (scaled, *cat.args[1:])
    gm.recompile()
    return gm


def drop_branches(gm: fx.GraphModule, removed: set[int]) -> fx.GraphModule:
    """Removes the factors and the ``removed`` branches from a traced branch module, in place."""
    cat, tensors = _concat(gm)
    plain = [t.args[0] if t.op == "call_function" and t.target is operator.mul else t for t in tensors]
    cat.args = ([t for i, t in enumerate(plain) if i not in removed], *cat.args[1:])
    eliminate_dead_code(gm)
    return gm


def is_branch_module(module: nn.Module) -> bool:
    return isinstance(module, fx.GraphModule) and isinstance(getattr(module, "gate", None), BranchGate)


@dataclass(frozen=True)
class BranchModule:
    """A module found to concatenate parallel branches: where it is, the layer each branch's
    factor folds into, and the outside layers' slices that read each branch's channels."""

    path: str
    fold_into: tuple[str, ...]
    readers: tuple[tuple[LayerSlice, ...], ...]


class BranchKind(StructureKind):
    """One factor per branch of each module whose output concatenates parallel branches."""

    name = "branch"
    order = 40
    coarse = True
    ops = ("drop_branches",)
    not_found = (
        "branch module to gate: a branch module returns torch.cat of two or more branches of its input, "
        "each ending in a BN/conv/linear layer"
    )

    def find(
        self, model: nn.Module, example_inputs: torch.Tensor, ignore: Sequence[str], discovery: Discovery
    ) -> tuple[list[BranchModule], list[str]]:
        found: list[BranchModule] = []
        skipped: list[str] = []
        for path, module in model.named_modules():
            if not path or under(path, [*ignore, *(b.path for b in found)]) or isinstance(module, nn.Sequential):
                continue
            if not any(True for _ in module.children()):
                continue
            described = _describe_module(model, path, module, discovery.graph, discovery.names, discovery.calls)
            if isinstance(described, str):
                if not described.startswith("its output is not") and not described.startswith("torch.fx"):
                    skipped.append(f"{path}: {described}")
                continue
            fold_into, readers = described
            found.append(BranchModule(path, tuple(fold_into), tuple(tuple(r) for r in readers)))
        return found, skipped

    def label(self, candidate: BranchModule) -> str:
        return candidate.path

    def gate(self, model: nn.Module, candidates: Sequence[BranchModule]) -> None:
        ref = next(iter(model.parameters()))
        for b in candidates:
            gate = BranchGate(b.fold_into, b.readers).to(device=ref.device, dtype=ref.dtype)
            model.set_submodule(b.path, _gate(model.get_submodule(b.path), gate))

    def plan(self, model: nn.Module, remove: bool, round_to: int, removal: Removal) -> None:
        dropped: dict[str, list[int]] = {}
        for name, m in model.named_modules():
            if not is_branch_module(m):
                continue
            lam = m.gate.weight.detach()
            removed = [i for i in range(lam.numel()) if remove and float(lam[i]) == 0.0]
            if len(removed) == lam.numel():
                removed = removed[1:]  # keep one branch (its factor 0 is folded: zero output)
            for i in removed:
                for s in m.gate.readers[i]:
                    removal.cut(s.path, s.role, s.index[0])
            dropped[name] = removed
        removal.steps.append(lambda model: self._compact(model, dropped))

    def _compact(self, model: nn.Module, dropped: dict[str, list[int]]) -> list[Edit]:
        for name, removed in dropped.items():
            m = model.get_submodule(name)
            lam = m.gate.weight.detach()
            for i in range(lam.numel()):
                if i not in removed:
                    fold_output_scale(m.get_submodule(m.gate.fold_into[i]), lam[i : i + 1])
            drop_branches(m, set(removed))
        return [{"op": "drop_branches", "path": n, "branches": r} for n, r in dropped.items() if r]

    def replay(self, model: nn.Module, edit: Edit) -> None:
        path = edit["path"]
        model.set_submodule(path, drop_branches(trace_module(model.get_submodule(path)), set(edit["branches"])))


register_kind(BranchKind())
