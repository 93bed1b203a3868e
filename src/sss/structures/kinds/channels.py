"""Channel and neuron factors on arbitrary models, with coupled layers found by Torch-Pruning.

Torch-Pruning's ``DependencyGraph`` traces the model through autograd and groups each
conv/linear output channel with every layer that must shrink with it: its BatchNorm, the
inputs of the layers that read it, the other producers of a residual sum it joins, its slice
of a concat, a depthwise conv that carries it. SSS puts one factor per channel on each such
*group* and multiplies it into every layer of the group that creates the channel's value:
each BatchNorm, and each conv/linear that is not followed by a BatchNorm of the group. So
``λ_c = 0`` makes channel ``c`` exactly zero wherever it flows (ReLU, sums, pooling, concat
and flatten keep zeros), and the group's slices can be cut with no change to the function.

:func:`sss.structures.find_structures` checks that promise on the example input: it removes half of
each group's channels from a copy (with random BatchNorm statistics) and compares outputs,
and a group that fails, say through ``sigmoid`` or ``x + 1`` on the channel, is skipped
with the reason (:mod:`sss.structures.discovery`). Torch-Pruning is used for discovery and
its per-layer pruning functions for the cuts; folding and the exactness check are ours
(docs/design.md, "coupled channels").
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from sss.errors import UnsupportedModelError
from sss.structures.dependency_graph import unsettled
from sss.structures.gate import ChannelGated, Gate, is_norm_act
from sss.structures.paths import under
from sss.structures.registry import Discovery, Removal, StructureKind, register_kind
from sss.structures.tracing import LAYERS, NORMS, in_width, out_width, qkv_projections


@dataclass(frozen=True)
class LayerSlice:
    """The part of one layer that a channel group owns: ``index[c]`` lists the layer's output
    (``role="out"``) or input (``role="in"``) indices that carry the group's channel ``c``."""

    path: str
    role: str
    index: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ChannelGroup:
    """Structures that one factor vector scales: ``channels`` of them, each a set of channels
    removed together (``kind="channel"``: one channel of a coupled group; ``kind="group"``:
    the channels of one group of a grouped conv). ``gated`` lists the layers the factor
    multiplies, ``slices`` every layer that shrinks when a structure goes."""

    name: str  # path of the group's first producer layer
    channels: int
    gated: tuple[LayerSlice, ...]  # the first is the root layer's output (its BN, or itself)
    slices: tuple[LayerSlice, ...]
    kind: str = "channel"
    #: Parameters indexed by structure along one axis, ``(path, axis)``: an attention's per-head
    #: relative position bias table (Swin), scales or biases (LeViT, TinyViT); or ``(path, axis,
    #: n)``, ``n`` entries per structure (EVA's ``q_bias``: a head's features). Cut by the kind.
    per_structure: tuple[tuple[str, int] | tuple[str, int, int], ...] = ()


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv1d | nn.Conv2d) and m.groups == m.out_channels == m.in_channels and m.groups > 1


def is_grouped(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv1d | nn.Conv2d) and m.groups > 1 and not _is_depthwise(m)


def describe(
    graph: tp.DependencyGraph, group, names: dict[nn.Module, str], calls, grouped_ok: nn.Module | None = None
) -> ChannelGroup | str:
    """Turns one Torch-Pruning group into a :class:`ChannelGroup`, or says why it cannot be one.
    ``grouped_ok`` is a grouped conv that may appear (the caller handles its groups)."""
    if reason := unsettled(group):
        return reason
    root = group[0].dep.target.module
    channels = len(group[0].idxs)
    slices: dict[tuple[str, str], list[list[int]]] = {}
    norms_after: dict[str, str] = {}  # layer → the BN right after it, which is gated instead
    for item in group:
        node, module = item.dep.target, item.dep.target.module
        role = "out" if item.dep.handler.__name__.endswith("out_channels") else "in"
        if role == "out" and not node.outputs:
            return "its channels reach the model output"
        if module not in names:
            continue  # Torch-Pruning's own nodes for ReLU, add, concat, flatten: nothing to cut
        path = names[module]
        if isinstance(module, nn.LayerNorm):
            return f"it is a stream read through LayerNorms ({path}): the embedding kind's (structures=('embedding',))"
        if not isinstance(module, LAYERS + NORMS):
            return f"it includes {path} ({type(module).__name__}), whose channels cannot be cut exactly"
        if is_grouped(module) and module is not grouped_ok:
            return f"its channels belong to groups of the grouped conv {path} (use structures=('group',))"
        if calls.get(module, 0) > 1:
            return f"{path} is used {calls[module]} times in forward"
        if isinstance(module, NORMS) or _is_depthwise(module):
            role = "out"  # one cut covers both sides
        if problem := add_indices(slices, path, role, item, module, channels):
            return problem
        if role == "out" and isinstance(module, LAYERS):
            users = graph.module2node[module].outputs
            if len(users) == 1 and users[0].module not in names and [is_norm_act(u.module) for u in users[0].outputs] \
                    == [True]:  # fmt: skip
                users = users[0].outputs  # a norm with its own activation: its batch_norm op is a node of its own
            if len(users) == 1 and isinstance(users[0].module, NORMS) and users[0].module in names:
                norms_after[path] = names[users[0].module]
    for layer, norm in norms_after.items():  # a layer and its BN are cut together: one channel map for both
        if (norm, "out") in slices and slices[(layer, "out")] != slices[(norm, "out")]:
            return (f"the traced channel map of {layer} differs from its BatchNorm {norm}'s (a channel reached by two "
                    "paths, as GhostNet's cheap operation reads its primary conv)")  # fmt: skip
    all_slices = [LayerSlice(p, r, tuple(tuple(ix) for ix in index)) for (p, r), index in slices.items()]
    gated = [s for s in all_slices if s.role == "out" and s.path not in norms_after]
    if norms_after.get(names[root]) not in (None, *[s.path for s in gated]):
        return f"{names[root]} is followed by a BatchNorm outside its group"
    root_out = norms_after.get(names[root], names[root])
    gated.sort(key=lambda s: s.path != root_out)
    return ChannelGroup(name=names[root], channels=channels, gated=tuple(gated), slices=tuple(all_slices))


def add_indices(slices: dict[tuple[str, str], list[list[int]]], path: str, role: str, item, module: nn.Module,
                channels: int) -> str | None:  # fmt: skip
    """Records which of ``module``'s ``role`` indices carry each of the group's ``channels`` (one
    Torch-Pruning group item), or says why the traced mapping does not fit the layer."""
    if any(r is None or not 0 <= r < channels for r in item.root_idxs):
        return f"Torch-Pruning's channel mapping loses track of which root channel reaches {path}"
    index = slices.setdefault((path, role), [[] for _ in range(channels)])
    for idx, root_idx in zip(item.idxs, item.root_idxs, strict=True):
        if idx not in index[root_idx]:
            index[root_idx].append(idx)
    if max(item.idxs) >= (out_width(module) if role == "out" else in_width(module)):
        return f"the traced channel mapping does not fit {path} (channels padded or reshaped on the way)"
    return None


def wrap(model: nn.Module, group: ChannelGroup) -> None:
    """Puts ``group``'s factor on its layers, in place."""
    ref = next(iter(model.parameters()))
    gate = Gate(group.kind, group.channels).to(device=ref.device, dtype=ref.dtype)
    for i, s in enumerate(group.gated):
        wrapper = model.get_submodule(s.path)
        if not isinstance(wrapper, ChannelGated):
            wrapper = ChannelGated(wrapper, out_width(wrapper)).to(ref.device)
            model.set_submodule(s.path, wrapper)
        wrapper.add_slice(gate, s.index, group if i == 0 else None)


def kept_channels(lam: torch.Tensor, round_to: int) -> torch.Tensor:
    """A mask of the nonzero factors, topped up with the first zero-factor channels to a
    multiple of ``round_to`` (at least one channel): a kept zero channel adds nothing."""
    keep = lam != 0
    target = max(1, math.ceil(int(keep.sum()) / round_to) * round_to)
    extra = min(target, lam.numel()) - int(keep.sum())
    if extra > 0:
        keep[torch.nonzero(~keep).flatten()[:extra]] = True
    return keep


def cut_slices(model: nn.Module, cuts: dict[tuple[str, str], set[int]]) -> None:
    """Removes, for each ``(layer path, role)``, the given output (``"out"``), input (``"in"``)
    or grouped-conv group (``"groups"``) indices, with Torch-Pruning's per-layer functions."""
    for (path, role), idxs in cuts.items():
        module = model.get_submodule(path)
        if idxs and role == "groups":
            _cut_conv_groups(module, sorted(idxs))
        elif idxs:
            pruner = tp.pruner.function.PrunerBox[tp.ops.module2type(module)]
            fn = pruner.prune_out_channels if role == "out" else pruner.prune_in_channels
            fn(module, sorted(idxs))


def _cut_conv_groups(conv: nn.Conv1d | nn.Conv2d, out_idxs: list[int]) -> None:
    """Removes whole groups of a grouped conv, given all their output channels: their filters
    go, and so do the input channels they read (the caller cuts those from the producers)."""
    per_group = conv.out_channels // conv.groups
    removed = len(out_idxs) // per_group
    keep = torch.ones(conv.out_channels, dtype=torch.bool)
    keep[out_idxs] = False
    conv.weight = nn.Parameter(conv.weight.detach()[keep].clone(), requires_grad=conv.weight.requires_grad)
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.detach()[keep].clone(), requires_grad=conv.bias.requires_grad)
    conv.in_channels -= removed * (conv.in_channels // conv.groups)
    conv.out_channels -= removed * per_group
    conv.groups -= removed


class LayerGateKind(StructureKind):
    """A kind whose factors scale layer outputs through :class:`ChannelGated` wrappers, one
    :class:`ChannelGroup` per gate: channels, and groups of grouped convs."""

    not_found = "removable structures of this kind"

    def describe_all(self, discovery: Discovery) -> Iterator[tuple[str, ChannelGroup | str]]:
        """Each candidate's root path and its :class:`ChannelGroup`, or why it cannot be one."""
        raise NotImplementedError

    def find(
        self, model: nn.Module, example_inputs: torch.Tensor, ignore: Sequence[str], discovery: Discovery
    ) -> tuple[list[ChannelGroup], list[str]]:
        found, skipped = [], []
        for root, described in self.describe_all(discovery):
            if isinstance(described, str):
                skipped.append(f"{root}: {described}")
            elif any(under(s.path, ignore) for s in described.slices):
                skipped.append(f"{root}: ignored")
            else:
                found.append(described)
        return found, skipped

    def label(self, candidate: ChannelGroup) -> str:
        return candidate.name

    def gate(self, model: nn.Module, candidates: Sequence[ChannelGroup]) -> None:
        for group in candidates:
            wrap(model, group)

    def plan(self, model: nn.Module, remove: bool, round_to: int, removal: Removal) -> None:
        for name, owner in model.named_modules():
            if not isinstance(owner, ChannelGated) or owner.group is None or owner.gate.kind != self.name:
                continue
            lam = owner.gate.weight.detach()
            if bool((lam < 0).any()):
                raise UnsupportedModelError(
                    f"{name}: negative {self.name} factors cannot be folded exactly; train them with nonneg=True"
                )
            if remove:
                keep = kept_channels(lam, round_to)
                removed = torch.nonzero(~keep).flatten().tolist()
                for s in owner.group.slices:
                    removal.cut(s.path, s.role, (i for c in removed for i in s.index[c]))
                self.after_cut(owner.group, keep, removal)

    def after_cut(self, group: ChannelGroup, keep: torch.Tensor, removal: Removal) -> None:
        """Hook: what else a cut changes (``keep``: the group's kept structures), e.g. a step
        that lowers an attention's ``num_heads``. Default: nothing."""


class ChannelKind(LayerGateKind):
    """One factor per channel (neuron) of each group of coupled conv/linear layers."""

    name = "channel"
    order = 10
    not_found = "removable channel structures"

    def describe_all(self, discovery: Discovery) -> Iterator[tuple[str, ChannelGroup | str]]:
        # An attention's query/key/value rows are its heads' (the head kind's), and Torch-Pruning's
        # search from them never ends on rotary embeddings and grouped-query reshapes (HF Llama).
        heads = qkv_projections(discovery.model)
        for tp_group in discovery.graph.get_all_groups(root_module_types=LAYERS, ignored_layers=heads):
            root = discovery.names.get(tp_group[0].dep.target.module, "?")
            yield root, describe(discovery.graph, tp_group, discovery.names, discovery.calls)


register_kind(ChannelKind())
