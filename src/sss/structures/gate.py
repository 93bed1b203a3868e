"""The scaling factor λ that SSS learns for each structure, and how to list them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

#: Structure kinds a gate can sit on. Only "block" is attached by this release.
KINDS = ("block", "group", "channel")


class Gate(nn.Module):
    """Multiplies channel ``c`` of its input by learnable factor ``λ_c``, initialised to 1.

    A block gate holds one scalar, which scales the whole tensor (residual blocks apply it
    inside their last layer instead, see ``ResidualBlock.gated_branch``). The factors are
    trained by a proximal optimizer (:class:`sss.APG`) that drives them to exact zeros.

    Args:
        kind: The structure the factor scales, one of ``"block"``, ``"group"``, ``"channel"``.
        size: Number of factors (1 for a block).
    """

    def __init__(self, kind: str, size: int = 1) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown gate kind {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view((1, -1) + (1,) * (x.dim() - 2))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, size={self.weight.numel()}"


@dataclass(frozen=True)
class GateRef:
    """A gate found in a model: its module path, its kind and its factor parameter."""

    name: str
    kind: str
    module: Gate

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    @property
    def num_zero(self) -> int:
        """How many of this gate's factors are exactly zero (the structures to remove)."""
        return int((self.module.weight.detach() == 0).sum())


def gates(model: nn.Module) -> list[GateRef]:
    """Lists every scaling factor of ``model`` in module order."""
    return [GateRef(name, m.kind, m) for name, m in model.named_modules() if isinstance(m, Gate)]


def factor_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Yields the factor parameters, the ones that belong to the proximal optimizer."""
    for ref in gates(model):
        yield ref.weight
