"""A model's edit history: what was gated, ignored and removed, in order, as plain JSON.

``attach`` and ``prune`` append to ``model.sss_history``; ``sss.save`` writes it into the
model's JSON spec, and ``sss.load`` rebuilds the architecture by replaying it on the
unpruned model (a zoo model, or the ``base`` a user passes; :mod:`sss.structures.replay`),
so no pickle is ever needed.

Ops: ``convert_transformers`` (torch encoder layers rewritten before tracing, see
:mod:`sss.structures.torch_transformer`), ``convert_conv1d`` (GPT-2's ``Conv1D`` layers as
``nn.Linear``, :mod:`sss.structures.conv1d`), ``attach`` (kinds, ignore, input_shape), ``prune``
(a marker: the gates are folded away here), ``cut`` (one layer's kept indices on one side:
``out``, ``in`` or ``groups``), and the kinds' own ops (``remove_block``, ``drop_branches``, ...;
see :attr:`StructureKind.ops`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from torch import nn

from sss.structures.registry import Edit

ATTR = "sss_history"


class ReplayOp(Protocol):
    """Replays one core edit on a rebuilt model; returns the model (``attach`` may replace it)."""

    def __call__(self, model: nn.Module, edit: Edit, *, pruned_later: bool) -> nn.Module: ...


#: The core ops (not a kind's), each registered by the module that writes it, so that an op is
#: written and replayed in one place (as :class:`~sss.structures.registry.StructureKind` does
#: for its own ops): ``attach``, ``convert_transformers`` and ``convert_conv1d`` in ``attach.py``, ``prune`` and
#: ``cut`` in ``prune.py``.
_CORE_OPS: dict[str, ReplayOp] = {}


def register_op(name: str) -> Callable[[ReplayOp], ReplayOp]:
    """Decorator registering the replay of core op ``name``; a name taken is refused."""

    def add(replay: ReplayOp) -> ReplayOp:
        if name in _CORE_OPS:
            raise ValueError(f"core op {name!r} is already registered")
        _CORE_OPS[name] = replay
        return replay

    return add


def core_op(name: str) -> ReplayOp | None:
    """The replay of core op ``name``, or ``None`` (a kind's op, or unknown)."""
    return _CORE_OPS.get(name)


def history(model: nn.Module) -> list[Edit]:
    """The edits that made ``model`` from its unpruned form, oldest first (a copy)."""
    return [dict(e) for e in getattr(model, ATTR, [])]


def record(model: nn.Module, edits: Iterable[Edit]) -> None:
    """Appends ``edits`` to ``model``'s history."""
    setattr(model, ATTR, [*history(model), *edits])


def removed_blocks(model: nn.Module) -> list[str]:
    """Paths of the residual blocks that pruning removed from ``model``; a removed branch of a
    block with several is ``path[j]`` (a transformer block's attention ``[0]``, MLP ``[1]``)."""
    out = []
    for e in history(model):
        if e["op"] == "remove_block":
            out += [f"{e['path']}[{j}]" for j in e["branches"]] if "branches" in e else [e["path"]]
    return out


def input_shape(model: nn.Module) -> list[int] | None:
    """The shape of one example input (without batch) given to the last ``attach``, if any."""
    shapes = [e["input_shape"] for e in history(model) if e["op"] == "attach" and e.get("input_shape")]
    return shapes[-1] if shapes else None
