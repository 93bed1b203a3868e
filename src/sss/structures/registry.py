"""The structure-kind interface, and the registry that ``attach``, ``prune``, ``find_structures``,
``structure_macs``, ``load`` and the CLI loop over.

A *kind* (block, group, channel, branch, or one of your own) is one class with a handful of
methods: find its structures in a model, gate them, say what removing the zero ones cuts, and
replay its edits on a fresh model. Register an instance with :func:`register_kind` and every
entry point knows it (docs/design.md, "adding a structure kind").

Two rules keep kinds composable. A kind that scales a layer's outputs wraps the layer in
:class:`~sss.structures.gate.ChannelGated`; ``prune`` folds and unwraps those before the cuts,
so cuts name layers by their paths in the ungated model. A kind that rewrites whole modules
(blocks, branches) does so in a step after the cuts, and gating then pruning with nothing
removed leaves the plain model's state-dict keys (``load`` relies on it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from sss.structures.tracing import Discovery

#: One entry of a model's edit history: ``{"op": name, ...fields}``, plain JSON.
Edit = dict[str, Any]


@dataclass
class Removal:
    """What ``prune`` collects from every kind before it changes the model.

    ``cuts`` maps ``(layer path, role)`` to indices in the layer's *original* numbering
    (``role``: ``"out"``, ``"in"``, or ``"groups"`` for whole groups of a grouped conv); all
    kinds' cuts are applied in one pass, so kinds that cut the same layer compose. ``steps``
    run after the cuts, in kind order; each changes the model's modules (drops a block, a
    branch) and returns the edits it made, for the history.
    """

    cuts: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    steps: list[Callable[[nn.Module], list[Edit]]] = field(default_factory=list)

    def cut(self, path: str, role: str, indices) -> None:
        self.cuts.setdefault((path, role), set()).update(int(i) for i in indices)


class StructureKind:
    """One kind of structure that carries a factor. Subclass, implement, :func:`register_kind`.

    Attributes:
        name: The kind's name, as users write it in ``structures=(...)``.
        min_keep: Structures a gate keeps at least when all its factors are zero (a layer
            keeps one channel; a block may go entirely).
        coarse: Whether one structure is a whole path of layers (a block, a branch) rather than
            a slice of a layer (a channel, a group): the budget's landing moves fine structures
            to fine-tune and ranks coarse ones apart.
        needs_example: Whether :meth:`find` needs an example input.
        check_exactness: Whether ``attach`` verifies on the example input that removing the
            found structures keeps the function (off for kinds that are exact by construction).
        ops: The edit ops this kind writes into the history and knows how to :meth:`replay`.
        not_found: Completes "<model> has no ..." when the model has none of this kind.
        inexact_causes: What may make a found structure fail the exactness check: the end of the
            reason ``find_structures`` reports for it.
        order: Where the kind comes in ``attach`` and ``prune`` (lower first): kinds that
            wrap layers (channel 10, group 20) before kinds that re-trace whole modules
            (block 30, branch 40), so a traced module sees the layer wrappers as leaves.
    """

    name: ClassVar[str]
    order: ClassVar[int] = 50
    min_keep: ClassVar[int] = 1
    coarse: ClassVar[bool] = False
    needs_example: ClassVar[bool] = True
    check_exactness: ClassVar[bool] = True
    ops: ClassVar[tuple[str, ...]] = ()
    not_found: ClassVar[str] = "structures of this kind"
    inexact_causes: ClassVar[str] = (
        "an op on the way does not keep zeros or moves channels: sigmoid, a constant add, padding; a buffer or "
        "parameter read by width; or an in-place op that writes into a tensor the removal keeps"
    )

    def find(
        self, model: nn.Module, example_inputs: torch.Tensor | None, ignore: Sequence[str], discovery: Discovery
    ) -> tuple[list[Any], list[str]]:
        """The structures of ``model`` that can be gated (any objects :meth:`gate` takes) and,
        for each candidate that cannot, ``"path: reason"``. ``model`` is not changed."""
        raise NotImplementedError

    def owner(self, gate_name: str) -> str:
        """The module path of the structure(s) that the gate at ``gate_name`` scales (a block's
        gate ``layer1.0.gate`` → ``layer1.0``; a layer's channel gate ``conv1.gate`` → ``conv1``)."""
        return gate_name.rsplit(".", 1)[0] if "." in gate_name else ""

    def label(self, candidate: Any) -> str:
        """The module path a candidate is reported under."""
        return str(candidate)

    def gate(self, model: nn.Module, candidates: Sequence[Any]) -> None:
        """Puts a factor (λ = 1) on each candidate, in place."""
        raise NotImplementedError

    def plan(self, model: nn.Module, remove: bool, round_to: int, removal: Removal) -> None:
        """Adds to ``removal`` what dropping this kind's zero-factor structures cuts (only when
        ``remove``; otherwise its factors are folded and nothing of it is removed). Called on
        the model to prune, before anything changes, with factors that are exact zeros."""
        raise NotImplementedError

    def replay(self, model: nn.Module, edit: Edit) -> None:
        """Applies one of this kind's edits (an op in :attr:`ops`) to a model without weights."""
        raise NotImplementedError


_KINDS: dict[str, StructureKind] = {}


def register_kind(kind: StructureKind, *, replace: bool = False) -> StructureKind:
    """Adds ``kind`` to the registry. A name already taken is refused unless ``replace``, and so
    is a history op that another kind replays."""
    if kind.name in _KINDS and not replace:
        raise ValueError(f"structure kind {kind.name!r} is already registered; pass replace=True to replace it")
    taken = {op: k.name for k in _KINDS.values() if k.name != kind.name for op in k.ops}
    if clash := [op for op in kind.ops if op in taken]:
        raise ValueError(f"history op {clash[0]!r} of kind {kind.name!r} is already replayed by {taken[clash[0]]!r}")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Removes a kind from the registry (for tests that add a toy kind)."""
    _KINDS.pop(name, None)


def kind_names() -> tuple[str, ...]:
    """The registered kinds, in the order ``attach`` and ``prune`` apply them."""
    return tuple(sorted(_KINDS, key=lambda name: _KINDS[name].order))


def get_kind(name: str) -> StructureKind:
    if name not in _KINDS:
        raise ValueError(f"unknown structure kind {name!r}; choose from {', '.join(_KINDS)}")
    return _KINDS[name]


def parse_kinds(structures: str | Sequence[str]) -> tuple[str, ...]:
    """The kind names in ``structures``, each checked and listed once, in the order given.

    ``structures`` is a sequence of names or one string: a single kind (``"channel"``) or a
    comma-separated list (``"block,channel"``), never read letter by letter.

    Raises:
        ValueError: A name is not a registered kind.
    """
    names = structures.split(",") if isinstance(structures, str) else list(structures)
    parsed: list[str] = []
    for name in names:
        name = name.strip() if isinstance(name, str) else name
        if name == "":  # "block," or "block,,channel": a stray comma names nothing
            continue
        kind = get_kind(name).name
        if kind not in parsed:  # a kind listed twice would be gated twice
            parsed.append(kind)
    return tuple(parsed)


def kind_of_op(op: str) -> StructureKind | None:
    """The kind that replays history op ``op``, if a kind owns it."""
    return next((k for k in _KINDS.values() if op in k.ops), None)
