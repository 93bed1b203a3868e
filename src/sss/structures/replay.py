"""Rebuilding a saved model's architecture: its edit history replayed on the unpruned model."""

from __future__ import annotations

from torch import nn

from sss.structures import attach as _attach_ops  # noqa: F401  (their core ops register)
from sss.structures.history import ATTR as HISTORY_ATTR
from sss.structures.history import core_op
from sss.structures.registry import Edit, kind_of_op


def replay(model: nn.Module, edits: list[Edit]) -> nn.Module:
    """Applies ``edits`` (a saved history) to ``model``, an unpruned model without weights.

    Each edit is replayed by the code that writes it: a core op (``attach``, ``prune``,
    ``cut``, ``convert_transformers``: :func:`sss.structures.history.core_op`) or a kind's op
    (:meth:`StructureKind.replay`). An ``attach`` followed by a ``prune`` is skipped: gating
    and then folding the gates away leaves the plain model. Raises ``ValueError`` naming the
    first edit that does not apply.
    """
    last_prune = max((i for i, e in enumerate(edits) if isinstance(e, dict) and e.get("op") == "prune"), default=-1)
    for i, edit in enumerate(edits):
        try:
            op = edit["op"]
            if (replay_op := core_op(op)) is not None:
                model = replay_op(model, edit, pruned_later=i < last_prune)
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
