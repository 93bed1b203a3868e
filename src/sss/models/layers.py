"""Small layers shared by the zoo."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def channel_count(model: str, width: object, meaning: str, example: int) -> int:
    """``width`` as a number of channels (a whole number >= 1; ``16.0`` reads as 16), else a
    ``ValueError`` saying what ``width`` means for ``model`` with an ``example``: zoo families
    read ``width`` differently, a count here, a fraction of the full widths in others."""
    whole = isinstance(width, int | float) and not isinstance(width, bool) and math.isfinite(width)
    if not (whole and width == int(width) and width >= 1):
        raise ValueError(f"{model} width {width!r}: width is {meaning}, a whole number >= 1, e.g. width={example}; "
                         "it is not a fraction")  # fmt: skip
    return int(width)


def width_fraction(model: str, width: object, meaning: str, most: float = 4.0) -> float:
    """``width`` as a multiplier of every layer's channels, in (0, ``most``], else a
    ``ValueError`` saying what ``width`` means for ``model`` with examples (a channel count
    such as 64 would build a model ``64x`` too wide)."""
    number = isinstance(width, int | float) and not isinstance(width, bool)
    if not (number and 0 < width <= most):
        raise ValueError(f"{model} width {width!r}: width scales {meaning}, a number in (0, {most:g}], e.g. "
                         "width=0.25 for quick runs or 1.0 for the full model; it is not a channel count")  # fmt: skip
    return float(width)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Parameter-free "option A" shortcut of He et al.: subsample by ``stride`` and zero-pad
    the new channels (evenly on both sides, as in the original CIFAR ResNets)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.cout - self.cin
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))

    def extra_repr(self) -> str:
        return f"{self.cin}->{self.cout}, stride={self.stride}"


def he_init(model: nn.Module) -> None:
    """He (MSRA) normal init for convs, as the official SSS code (Xavier 'in', magnitude 2);
    BN γ=1, β=0; linear layers uniform in ±1/sqrt(fan_in) with zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1 / math.sqrt(m.in_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
