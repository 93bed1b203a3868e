"""The residual-block protocol: what a block is, and what is left of it when λ = 0."""

from __future__ import annotations

import copy

import torch
from torch import nn

from sss.structures.gate import ChannelGated, Gate


class ResidualBlock(nn.Module):
    """A residual block ``out = post(shortcut(x) + λ · branch(x))`` whose λ can remove it.

    Subclasses build ``branch`` (an ``nn.Sequential`` ending in a BatchNorm, conv or linear
    layer) and ``shortcut``, and say what survives removal. ``gate`` is ``nn.Identity`` until
    :func:`sss.attach` puts a :class:`Gate` there.
    """

    gate: nn.Module
    branch: nn.Sequential

    def gated_branch(self, x: torch.Tensor) -> torch.Tensor:
        """``λ · branch(x)``, with λ applied to the weight and bias of the branch's last layer.

        ``λ·BN(x)`` is BN with affine ``(λγ, λβ)`` and ``λ·conv(x)`` is a conv with weight ``λW``,
        so scaling those few parameters gives the same function (and the same gradients) as
        multiplying the output, without a pass over the whole activation tensor forward and
        two backward. :func:`fold_output_scale` makes the same scaling permanent at prune time.
        """
        if not isinstance(self.gate, Gate):
            return self.branch(x)
        *body, last = self.branch
        for layer in body:
            x = layer(x)
        wrapper = last if isinstance(last, ChannelGated) else None  # channel factors on the same layer
        last = wrapper.inner if wrapper is not None else last
        lam = self.gate.weight
        params = {"weight": last.weight * lam}
        if last.bias is not None:
            params["bias"] = last.bias * lam
        out = torch.func.functional_call(last, params, (x,))
        return wrapper.scaled(out) if wrapper is not None else out

    def removed_form(self) -> nn.Module | None:
        """The module that computes this block's output when λ = 0 (``None``: identity)."""
        raise NotImplementedError

    def fold_scale(self, scale: torch.Tensor) -> None:
        """Multiplies the branch's output by ``scale`` in its own weights (no gate needed)."""
        raise NotImplementedError

    def factor(self) -> torch.Tensor | None:
        """The block's λ, or ``None`` if it carries no gate."""
        return self.gate.weight.detach() if isinstance(self.gate, Gate) else None

    def compact(self, threshold: float = 0.0) -> nn.Module | None:
        """A plain module equal to this gated block: its removed form if ``|λ| <= threshold``,
        else a gate-free copy with λ folded into the branch."""
        lam = self.factor()
        if lam is None:
            return copy.deepcopy(self)
        if float(lam.abs().max()) <= threshold:
            return copy.deepcopy(self.removed_form())
        kept = copy.deepcopy(self)
        kept.gate = nn.Identity()
        kept.fold_scale(lam)
        return kept
