"""A model's edit history: what was gated, ignored and removed, in order, as plain JSON.

``attach`` and ``prune`` append to ``model.sss_history``; ``sss.save`` writes it into the
model's JSON spec, and ``sss.load`` rebuilds the architecture by replaying it on the
unpruned model (a zoo model, or the ``base`` a user passes), so no pickle is ever needed.

Ops: ``attach`` (kinds, ignore, input_shape), ``prune`` (a marker: the gates are folded away
here), ``cut`` (one layer's kept indices on one side: ``out``, ``in`` or ``groups``), and the
kinds' own ops (``remove_block``, ``drop_branches``, ...; see :attr:`StructureKind.ops`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from sss.structures.registry import Edit, kind_of_op
from sss.structures.tracing import role_width

ATTR = "sss_history"


def history(model: nn.Module) -> list[Edit]:
    """The edits that made ``model`` from its unpruned form, oldest first (a copy)."""
    return [dict(e) for e in getattr(model, ATTR, [])]


def record(model: nn.Module, edits: Iterable[Edit]) -> None:
    """Appends ``edits`` to ``model``'s history."""
    setattr(model, ATTR, [*history(model), *edits])


def removed_blocks(model: nn.Module) -> list[str]:
    """Paths of the residual blocks that pruning removed from ``model``."""
    return [e["path"] for e in history(model) if e["op"] == "remove_block"]


def input_shape(model: nn.Module) -> list[int] | None:
    """The shape of one example input (without batch) given to the last ``attach``, if any."""
    shapes = [e["input_shape"] for e in history(model) if e["op"] == "attach" and e.get("input_shape")]
    return shapes[-1] if shapes else None


def replay(model: nn.Module, edits: list[Edit]) -> nn.Module:
    """Applies ``edits`` (a saved history) to ``model``, an unpruned model without weights.

    An ``attach`` followed by a ``prune`` is skipped: gating and then folding the gates away
    leaves the plain model's modules and state-dict keys (a contract of every kind), so only
    the cuts and removals after it change the architecture, and ``prune`` itself is a marker.
    Raises ``ValueError`` naming the first edit that does not apply.
    """
    from sss.structures.attach import attach
    from sss.structures.channels import cut_slices

    last_prune = max((i for i, e in enumerate(edits) if isinstance(e, dict) and e.get("op") == "prune"), default=-1)
    for i, edit in enumerate(edits):
        try:
            op = edit["op"]
            if op == "attach" and i > last_prune:
                shape = edit.get("input_shape")
                example = torch.zeros(1, *shape) if shape else None
                model = attach(model, example, edit["kinds"], ignore=edit.get("ignore", []), inplace=True)
            elif op in ("attach", "prune"):
                continue
            elif op == "cut":
                layer, role, kept = model.get_submodule(edit["layer"]), edit["role"], set(edit["kept"])
                width = role_width(layer, role)
                if width != edit["width"] or not kept <= set(range(width)):
                    raise ValueError(f"{edit['layer']} has {width} {role} channels; the edit expects {edit['width']}")
                cut_slices(model, {(edit["layer"], role): [k for k in range(width) if k not in kept]})
            elif (kind := kind_of_op(op)) is not None:
                kind.replay(model, edit)
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as e:
            raise ValueError(f"edit {i} ({_describe(edit)}) does not apply to {type(model).__name__}: {e}") from e
    setattr(model, ATTR, [dict(e) for e in edits])
    return model


def _describe(edit) -> str:
    if not isinstance(edit, dict):
        return repr(edit)[:80]
    fields = ", ".join(f"{k}={v!r}"[:60] for k, v in edit.items() if k not in ("op", "kept"))
    return f"{edit.get('op')}: {fields}"
