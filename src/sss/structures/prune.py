"""``sss.prune``: turn a gated model into a plain, smaller ``nn.Module``."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import torch
from torch import nn

from sss.structures.boundary import model_errors
from sss.structures.copying import deep_copy
from sss.structures.gate import gates, unwrap_gated_layers
from sss.structures.history import record, register_op
from sss.structures.kinds.channels import cut_slices
from sss.structures.registry import Edit, Removal, get_kind, kind_names, parse_kinds
from sss.structures.tracing import role_width


def prune(
    model: nn.Module,
    threshold: float = 0.0,
    *,
    round_to: int = 1,
    structures: str | Sequence[str] | None = None,
) -> nn.Module:
    """Returns a plain copy of ``model`` without the structures whose factor is zero.

    Every registered kind says what its zero structures cut (channels lose their filters, BN
    entries and the readers' input slices; blocks become their shortcut; branches leave their
    concat); the cuts of all kinds are applied in one pass, so kinds compose. Surviving
    factors are folded into the weights, so the result has no gates and computes the same
    function as the gated model (up to float rounding). ``model`` is left unchanged; the
    result's edit history (:func:`sss.structures.history.history`) lists what was removed.

    Args:
        model: A gated model (see :func:`sss.attach`).
        threshold: Factors at or below this magnitude count as zero. Keep 0 for APG/ISTA,
            whose zeros are exact; the L1-subgradient SGD baseline needs a positive one.
        round_to: Keep channel counts a multiple of this (extra channels keep a zero factor).
        structures: The kinds to remove (default: all), or one string naming one kind or a
            comma-separated list. The factors of other kinds are folded into the weights and
            their structures stay, zero or not.

    Raises:
        ValueError: ``threshold`` is negative or not finite, ``round_to`` is not an int >= 1, or a
            kind is unknown.
    """
    threshold = _checked_threshold(threshold)
    round_to = _checked_round_to(round_to)
    kinds = kind_names() if structures is None else parse_kinds(structures)
    was_training = model.training
    with model_errors(model, "pruning"):
        compact = deep_copy(model).eval()
        if threshold > 0:
            zero_small_factors(compact, threshold, kinds)
        removal = Removal()
        for name in kind_names():
            get_kind(name).plan(compact, name in kinds, round_to, removal)
        unwrap_gated_layers(compact)
        edits: list[Edit] = [{"op": "prune", "structures": list(kinds), "round_to": round_to}]
        edits += _apply_cuts(compact, removal.cuts)
        for step in removal.steps:
            edits += step(compact)
    leftover = gates(compact)
    if leftover:
        raise NotImplementedError(f"no registered kind folds gate(s) {[g.name for g in leftover]}")
    record(compact, edits)
    return compact.train(was_training)


def _checked_threshold(threshold: float) -> float:
    """``threshold`` as a float, or a ValueError unless it is a finite number >= 0 (not a bool,
    not a string)."""
    is_number = isinstance(threshold, numbers.Real) and not isinstance(threshold, bool)
    value = float(threshold) if is_number else math.nan  # nan: refused below, with the value named
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"threshold must be a finite number >= 0 (factors with |λ| at or below it count as zero), "
                         f"got {threshold!r}; pass 0 to remove only exact zeros")  # fmt: skip
    return value


def _checked_round_to(round_to: int) -> int:
    """``round_to`` as an int, or a ValueError unless it is an int >= 1 (not a bool, not a float)."""
    try:
        value = operator.index(round_to) if not isinstance(round_to, bool) else 0
    except TypeError:
        value = 0  # a float or a string: refused below, with the value named
    if value < 1:
        raise ValueError(f"round_to must be an int >= 1 (channel counts are kept a multiple of it), got {round_to!r}; "
                         "pass 1 to keep any count")  # fmt: skip
    return value


@register_op("prune")
def _replay_prune(model: nn.Module, edit: Edit, *, pruned_later: bool) -> nn.Module:
    """A marker: the gates were folded away here; the ``cut`` edits that follow change the model."""
    return model


@register_op("cut")
def _replay_cut(model: nn.Module, edit: Edit, *, pruned_later: bool) -> nn.Module:
    """Cuts one layer side to the indices the edit kept, after checking they fit its width."""
    layer, role, kept = model.get_submodule(edit["layer"]), edit["role"], set(edit["kept"])
    width = role_width(layer, role)
    if width != edit["width"]:
        raise ValueError(f"{edit['layer']} has {width} {role} channels; the edit expects {edit['width']}")
    if outside := sorted(k for k in kept if not 0 <= k < width):
        raise ValueError(
            f"it keeps {role} indices {outside[:3]} of {edit['layer']}, which has only "
            f"{width} (0-{width - 1}): the saved history is damaged"
        )
    cut_slices(model, {(edit["layer"], role): [k for k in range(width) if k not in kept]})
    return model


def _apply_cuts(model: nn.Module, cuts: dict[tuple[str, str], set[int]]) -> list[Edit]:
    """Cuts every layer once, in its original numbering; returns one ``cut`` edit per layer side."""
    edits = []
    for (path, role), idxs in cuts.items():
        if not idxs:
            continue
        width = role_width(model.get_submodule(path), role)
        edits.append({"op": "cut", "layer": path, "role": role, "width": width,
                      "kept": [k for k in range(width) if k not in idxs]})  # fmt: skip
    cut_slices(model, cuts)
    return edits


@torch.no_grad()
def zero_small_factors(model: nn.Module, threshold: float, kinds: str | Sequence[str] | None = None) -> int:
    """Sets every factor with ``|λ| <= threshold`` to exactly 0, in place; returns how many.

    This is the pruning threshold of the L1-subgradient SGD baseline, which produces no
    exact zeros by itself. Apply it before evaluating, so that the gated model that is
    measured is the one that :func:`prune` makes smaller. ``kinds`` limits it to those kinds
    (names, or one string: ``"channel"``, ``"block,channel"``).

    Raises:
        ValueError: ``threshold`` is negative or not finite, or a kind is unknown.
    """
    threshold = _checked_threshold(threshold)
    kinds = None if kinds is None else parse_kinds(kinds)
    count = 0
    for ref in gates(model):
        if kinds is not None and ref.kind not in kinds:
            continue
        small = ref.weight.abs() <= threshold
        ref.weight[small] = 0.0
        count += int(small.sum())
    return count
