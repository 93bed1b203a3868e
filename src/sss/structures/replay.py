"""Rebuilding a saved model's architecture: its edit history replayed on the unpruned model."""

from __future__ import annotations

import torch
from torch import nn

from sss.structures.attach import attach
from sss.structures.history import ATTR as HISTORY_ATTR
from sss.structures.kinds.channels import cut_slices
from sss.structures.registry import Edit, kind_of_op
from sss.structures.torch_transformer import convert_torch_transformers
from sss.structures.tracing import role_width


def replay(model: nn.Module, edits: list[Edit]) -> nn.Module:
    """Applies ``edits`` (a saved history) to ``model``, an unpruned model without weights.

    An ``attach`` followed by a ``prune`` is skipped: gating and then folding the gates away
    leaves the plain model's modules and state-dict keys (a contract of every kind), so only
    the cuts and removals after it change the architecture, and ``prune`` itself is a marker.
    Raises ``ValueError`` naming the first edit that does not apply.
    """
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
            elif op == "convert_transformers":
                if (paths := convert_torch_transformers(model, ignore=edit.get("ignore", []))) != edit["paths"]:
                    raise ValueError(f"it rewrites torch transformer modules at {paths}, the edit at {edit['paths']}")
            elif op == "cut":
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
            elif (kind := kind_of_op(op)) is not None:
                kind.replay(model, edit)
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as e:
            raise ValueError(f"edit {i} ({_describe(edit)}) does not apply to {type(model).__name__}: {e}") from e
    setattr(model, HISTORY_ATTR, [dict(e) for e in edits])
    return model


def _describe(edit) -> str:
    if not isinstance(edit, dict):
        return repr(edit)[:80]
    fields = ", ".join(f"{k}={v!r}"[:60] for k, v in edit.items() if k not in ("op", "kept"))
    return f"{edit.get('op')}: {fields}"
