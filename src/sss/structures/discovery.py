"""Finding the channel and group structures of any model by tracing, checked for exactness."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sss.structures.channels import (
    LAYERS,
    ChannelGroup,
    build_graph,
    call_counts,
    describe,
    is_grouped,
    removes_exactly,
    wrap,
)  # fmt: skip
from sss.structures.groups import describe_conv_groups
from sss.structures.paths import under


def find_structures(
    model: nn.Module, example_inputs: torch.Tensor, kinds: Sequence[str] = ("channel",), ignore: Sequence[str] = ()
) -> tuple[list[ChannelGroup], list[str]]:
    """Returns the removable ``"channel"`` and/or ``"group"`` structures of ``model`` and, for
    each candidate that cannot be gated, a sentence saying why. ``model`` is unchanged.

    Every structure found is checked on ``example_inputs``: a copy with random BN statistics
    loses half of each structure and must compute the same outputs; a structure that fails
    (an op on the way that turns zeros into something else) is reported, not returned.
    """
    graph = build_graph(model, example_inputs)
    names = {m: n for n, m in model.named_modules()}
    calls = call_counts(model, example_inputs)
    described: list[tuple[str, ChannelGroup | str]] = []
    if "channel" in kinds:
        for tp_group in graph.get_all_groups(root_module_types=LAYERS):
            root = tp_group[0].dep.target.module
            described.append((names.get(root, "?"), describe(graph, tp_group, names, calls)))
    if "group" in kinds:
        for m, path in names.items():
            if is_grouped(m):
                described.append((path, describe_conv_groups(graph, m, names, calls)))
    found, skipped = [], []
    for root, d in described:
        if isinstance(d, str):
            skipped.append(f"{root}: {d}")
        elif any(under(s.path, ignore) for s in d.slices):
            skipped.append(f"{root}: ignored")
        else:
            found.append(d)
    if not removes_exactly(model, found, example_inputs):  # find the culprits one at a time
        exact = []
        for group in found:
            if removes_exactly(model, [group], example_inputs):
                exact.append(group)
            else:
                skipped.append(f"{group.name}: removing its channels changes the output (an op on the way "
                               "does not keep zeros or moves channels: sigmoid, a constant add, padding)")  # fmt: skip
        found = exact
    return found, skipped


def attach_traced(
    model: nn.Module, example_inputs: torch.Tensor, kinds: Sequence[str], ignore: Sequence[str] = ()
) -> list[ChannelGroup]:
    """Puts a factor vector on each structure :func:`find_structures` returns, in place."""
    found, _ = find_structures(model, example_inputs, kinds, ignore)
    for group in found:
        wrap(model, group)
    return found
