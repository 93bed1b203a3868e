"""Group factors: one per group of a grouped conv (ResNeXt cardinality), found by tracing.

Removing group ``g`` of a conv with ``G`` groups removes its filters (and the layers that
read only them: the BN after it, the next layer's input slice) and the input channels that
group reads (the filters producing them, and their BN), and leaves a conv with ``G - 1``
groups. The factor multiplies the conv's output (after its BN), so ``λ_g = 0`` makes the
group's outputs exactly zero. A group is removable only if its input channels feed nothing
else, and its output is not summed with another layer's (those would keep the channels alive).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch_pruning as tp
from torch import nn

from sss.structures.kinds.channels import ChannelGroup, LayerGateKind, LayerSlice, describe, is_grouped
from sss.structures.registry import Discovery, register_kind


def _by_group(index: tuple[tuple[int, ...], ...], per_group: int, groups: int) -> tuple[tuple[int, ...], ...]:
    """Merges a per-channel index into a per-group one (channel ``k`` belongs to ``k // per_group``)."""
    merged: list[list[int]] = [[] for _ in range(groups)]
    for k, idxs in enumerate(index):
        merged[k // per_group].extend(idxs)
    return tuple(tuple(sorted(set(m))) for m in merged)


def describe_conv_groups(
    graph: tp.DependencyGraph, conv: nn.Conv1d | nn.Conv2d, names: dict[nn.Module, str], calls
) -> ChannelGroup | str:
    """The group structures of one grouped conv, or why they cannot be removed."""
    path, groups = names[conv], conv.groups
    out_group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, list(range(conv.out_channels)))
    out_side = describe(graph, out_group, names, calls, grouped_ok=conv)
    if isinstance(out_side, str):
        return out_side
    if len(out_side.gated) != 1:
        return f"its output is summed with {[s.path for s in out_side.gated[1:]]}, so a zero group stays alive"
    in_group = graph.get_pruning_group(conv, tp.prune_conv_in_channels, list(range(conv.in_channels)))
    in_side = describe(graph, in_group, names, calls, grouped_ok=conv)
    if isinstance(in_side, str):
        return in_side
    readers = [s.path for s in in_side.slices if s.role == "in" and s.path != path]
    if readers:
        return f"its input channels are also read by {readers}"
    if any(s.role == "out" and s.path != path and isinstance(_module(names, s.path), nn.Conv1d | nn.Conv2d)
           and _module(names, s.path).groups > 1 for s in in_side.slices):  # fmt: skip
        return "its input comes from a grouped or depthwise conv"
    out_per, in_per = conv.out_channels // groups, conv.in_channels // groups
    slices = [LayerSlice(s.path, "groups" if s.path == path else s.role, _by_group(s.index, out_per, groups))
              for s in out_side.slices]  # fmt: skip
    slices += [LayerSlice(s.path, s.role, _by_group(s.index, in_per, groups)) for s in in_side.slices if s.path != path]
    first = out_side.gated[0]
    gated = (LayerSlice(first.path, first.role, _by_group(first.index, out_per, groups)),)
    return ChannelGroup(name=path, channels=groups, kind="group", slices=tuple(slices), gated=gated)


def _module(names: dict[nn.Module, str], path: str) -> nn.Module:
    return next(m for m, p in names.items() if p == path)


class GroupKind(LayerGateKind):
    """One factor per group of each grouped conv (ResNeXt cardinality)."""

    name = "group"
    order = 20
    not_found = "removable group structures"

    def describe_all(self, discovery: Discovery) -> Iterator[tuple[str, ChannelGroup | str]]:
        for m, path in discovery.names.items():
            if is_grouped(m):
                yield path, describe_conv_groups(discovery.graph, m, discovery.names, discovery.calls)


register_kind(GroupKind())
