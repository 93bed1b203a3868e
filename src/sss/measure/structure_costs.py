"""What one structure costs: the MACs that removing it saves, per gate, measured."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sss.measure.count import count
from sss.structures.gate import factors_restored, gates
from sss.structures.prune import prune
from sss.structures.registry import get_kind


def structure_macs(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, float]:
    """``{gate name: MACs per structure}`` of a gated model (:func:`structure_costs`)."""
    return structure_costs(model, example_inputs, "macs")


def structure_costs(
    model: nn.Module, example_inputs: torch.Tensor, metric: str | Callable[[nn.Module], float] = "macs"
) -> dict[str, float]:
    """``{gate name: MACs (or params) per structure}`` of a gated model's full architecture, by
    measurement: each gate's factors are zeroed in turn (all others non-zero), the model is
    pruned and counted, and what is saved is divided by the structures removed. Measuring
    (instead of a formula per layer type) covers every layer a structure touches: its filters,
    its BN, the readers' inputs.

    ``metric`` is ``"macs"``, ``"params"`` or a cost function of a compact model (e.g. a
    :class:`~sss.measure.latency_model.LatencyModel`'s prediction).
    """
    if callable(metric):
        cost = metric
    else:
        which = {"macs": 0, "params": 1}[metric]

        def cost(compact: nn.Module) -> float:
            return count(compact, example_inputs)[which]

    costs = {}
    with factors_restored(model) as refs:  # the full architecture: every other factor 1 while one gate is zeroed
        for r in refs:
            r.weight.fill_(1.0)
        full = cost(prune(model))
        for ref in refs:
            ref.weight.zero_()
            removed = ref.weight.numel() - get_kind(ref.kind).min_keep  # e.g. a layer keeps one channel
            costs[ref.name] = (full - cost(prune(model))) / max(1, removed)
            ref.weight.fill_(1.0)
    return costs


def mac_weights(
    model: nn.Module, example_inputs: torch.Tensor, power: float = 1.0, *, per_kind: bool = True
) -> dict[str, float]:
    """Per-gate multipliers of γ proportional to :func:`structure_macs` to the ``power``,
    normalised so that the average over all factors of a kind is 1 (the kind's γ keeps its
    meaning on average), or with ``per_kind=False`` over all factors at once: one price per MAC
    across kinds, so the penalty compares a head with a neuron by what each costs."""
    costs = {name: macs**power for name, macs in structure_macs(model, example_inputs).items()}
    sizes = {r.name: r.weight.numel() for r in gates(model)}
    kinds = {r.name: r.kind if per_kind else "all" for r in gates(model)}
    weights = {}
    for kind in set(kinds.values()):
        names = [n for n in costs if kinds[n] == kind]
        mean = sum(costs[n] * sizes[n] for n in names) / sum(sizes[n] for n in names)
        weights.update({n: costs[n] / mean if mean > 0 else 1.0 for n in names})
    return weights
