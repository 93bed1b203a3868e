"""Finding a model's structures of every requested kind, each checked for exact removal."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sss.structures.gate import Gate
from sss.structures.registry import Discovery, StructureKind, get_kind

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class StructureReport:
    """What :func:`find_structures` found.

    Attributes:
        structures: Kind name → the structures of that kind that can be gated (each kind's
            own description objects; :meth:`names` gives their module paths).
        skipped: ``"path: reason"`` for every candidate that cannot be gated.
    """

    structures: dict[str, list[Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def names(self, kind: str) -> list[str]:
        """Module paths of the structures found of ``kind``."""
        return [get_kind(kind).label(c) for c in self.structures.get(kind, [])]

    @property
    def found(self) -> list[str]:
        """The kinds with at least one structure."""
        return [k for k, found in self.structures.items() if found]

    @property
    def missing(self) -> list[str]:
        """The requested kinds of which the model has none."""
        return [k for k, found in self.structures.items() if not found]

    def summary(self) -> str:
        """One line: how many structures of each kind, and which kinds were not found."""
        parts = [f"{len(self.structures[k])} {k}" for k in self.found]
        text = "gated " + (", ".join(parts) or "nothing")
        return text + (f"; not found: {', '.join(self.missing)}" if self.missing else "")


def find_structures(
    model: nn.Module,
    example_inputs: torch.Tensor | None,
    kinds: Sequence[str] = ("channel",),
    ignore: Sequence[str] = (),
) -> StructureReport:
    """Returns the structures of each kind in ``kinds`` that :func:`sss.attach` would gate and,
    for each candidate that cannot be gated, a sentence saying why. ``model`` is unchanged.

    Every structure found by a kind that asks for it (``check_exactness``) is checked on
    ``example_inputs``: a copy with random BN statistics loses half of each structure and must
    compute the same outputs; a structure that fails (an op on the way that turns zeros into
    something else) is reported, not returned.
    """
    discovery = Discovery(model, example_inputs)
    report = StructureReport()
    for name in kinds:
        kind = get_kind(name)
        found, skipped = kind.find(model, example_inputs, ignore, discovery)
        if found and kind.check_exactness and example_inputs is not None:
            found, failed = exact_subset(model, kind, found, example_inputs)
            skipped += [f"{kind.label(c)}: removing its {kind.name} structures changes the output (an op on the "
                        "way does not keep zeros or moves channels: sigmoid, a constant add, padding)"
                        for c in failed]  # fmt: skip
        report.structures[name] = found
        report.skipped += skipped
    return report


def exact_subset(
    model: nn.Module, kind: StructureKind, candidates: list[Any], example_inputs: torch.Tensor
) -> tuple[list[Any], list[Any]]:
    """Splits ``candidates`` into those whose removal keeps the outputs and those whose removal
    does not: all at once first (one copy), then one at a time to find the culprits."""
    if _removes_exactly(model, kind, candidates, example_inputs):
        return candidates, []
    exact, failed = [], []
    for c in candidates:
        (exact if _removes_exactly(model, kind, [c], example_inputs) else failed).append(c)
    return exact, failed


def _removes_exactly(model: nn.Module, kind: StructureKind, candidates: list[Any], example_inputs) -> bool:
    """Gates ``candidates`` in a copy, zeroes every other factor (the rest 0.75) and checks that
    pruning keeps the outputs (to 1e-4 relative) with random BN statistics."""
    from sss.surgery.prune import prune

    trial = copy.deepcopy(model).eval()
    gen = torch.Generator().manual_seed(0)
    try:
        kind.gate(trial, candidates)
        with torch.no_grad():
            for m in trial.modules():
                if isinstance(m, Gate) and m.kind == kind.name:
                    m.weight.fill_(0.75)[::2] = 0.0
                elif isinstance(m, _NORMS) and m.affine and m.track_running_stats:
                    m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                    m.running_var.uniform_(0.5, 2.0, generator=gen)
                    m.bias.uniform_(-0.3, 0.3, generator=gen)
            expected = trial(example_inputs)
            actual = prune(trial)(example_inputs)
    except Exception:
        return False
    scale = float(expected.abs().max()) or 1.0
    return actual.shape == expected.shape and float((actual - expected).abs().max()) <= 1e-4 * scale
