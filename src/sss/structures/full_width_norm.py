"""The LayerNorm of a narrowed residual stream that computes what the full-width one did.

A transformer's LayerNorm takes its mean and variance over the whole embedding width ``C``. When
the embedding kind zeroes some stream channels (their factor is 0 at every write into the
stream), the norm still divides by ``C`` and counts those zeros in its statistics; a plain
``nn.LayerNorm`` over the ``k`` kept channels would divide by ``k`` and compute another function.
:class:`FullWidthLayerNorm` keeps ``C`` as its divisor: with ``x`` the kept channels,

    mean = Σ x / C
    var  = (Σ (x − mean)² + (C − k)·mean²) / C       (each removed zero is ``0 − mean`` off)

which is exactly the full-width norm's statistics. It is computed as just that: the removed
channels put back as zeros (``F.pad``, at the end: a norm's statistics do not depend on the
channels' order), one fused ``F.layer_norm`` over ``C``, its output sliced back to the kept
channels and the affine applied with one ``addcmul``: three kernels where ``nn.LayerNorm`` runs
one (the formula written out in tensor ops took more than twice as long again). That is the
price of the exact cut, visible in the compact models' latency in ``benchmarks/results/vit.md``;
ONNX exports all three ops.

:func:`use_stock_norms` swaps them for plain ``nn.LayerNorm`` modules over the kept width, for
users who want stock modules only: not the same function (the difference is the caller's to
measure and fine-tune away; ``benchmarks/`` reports it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FullWidthLayerNorm(nn.Module):
    """LayerNorm over the ``kept`` channels (last dim) of a stream that was ``full_width`` wide,
    whose other channels are zero: the full-width norm's output on the kept channels.

    Args:
        kept: Channels it normalises (its input's last dim).
        full_width: The stream's width before the cut (the statistics' divisor).
        eps: The original norm's epsilon.
        bias: Whether it has a bias (``nn.LayerNorm(bias=False)`` has none).
    """

    def __init__(self, kept: int, full_width: int, *, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        if not 0 < kept <= full_width:
            raise ValueError(f"kept must be in 1..full_width ({full_width}), got {kept}")
        self.kept, self.full_width, self.eps = kept, full_width, eps
        self.weight = nn.Parameter(torch.ones(kept))
        self.bias = nn.Parameter(torch.zeros(kept)) if bias else None

    @classmethod
    def from_norm(cls, norm: nn.LayerNorm, full_width: int) -> FullWidthLayerNorm:
        """The full-width form of ``norm``, already cut to its kept channels (its parameters are shared)."""
        new = cls(norm.normalized_shape[0], full_width, eps=norm.eps, bias=norm.bias is not None)
        new.weight, new.bias = norm.weight, norm.bias
        return new.to(norm.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(F.pad(x, (0, self.full_width - self.kept)), (self.full_width,), eps=self.eps)
        normed = normed[..., : self.kept]
        return torch.addcmul(self.bias, normed, self.weight) if self.bias is not None else normed * self.weight

    def extra_repr(self) -> str:
        return f"{self.kept} of {self.full_width}, eps={self.eps}"


def use_stock_norms(model: nn.Module) -> int:
    """Replaces every :class:`FullWidthLayerNorm` of ``model`` with a plain ``nn.LayerNorm`` over
    its kept width (same weights), in place; returns how many. The result is **not** the same
    function: the norms now divide by the kept width. Measure the difference and fine-tune."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, FullWidthLayerNorm)]
    for name, m in found:
        stock = nn.LayerNorm(m.kept, eps=m.eps, bias=m.bias is not None, device=m.weight.device, dtype=m.weight.dtype)
        stock.weight = m.weight
        if m.bias is not None:
            stock.bias = m.bias
        model.set_submodule(name, stock)
    return len(found)
