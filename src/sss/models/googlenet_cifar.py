"""GoogLeNet for CIFAR (the common 32x32 adaptation of Szegedy et al. 2015), GAL's branch model:
nine Inception modules whose four branches are concatenated."""

from __future__ import annotations

import torch
from torch import nn

from sss.models.layers import he_init, width_fraction
from sss.models.registry import register_model

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5 (as two 3x3), pool projection) per module; "M" max-pools.
_MODULES = (
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
)  # fmt: skip


def _cbr(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Inception(nn.Module):
    """Four branches, concatenated: 1x1; 1x1→3x3; 1x1→3x3→3x3; max-pool→1x1."""

    def __init__(self, cin: int, n1: int, r3: int, n3: int, r5: int, n5: int, pool: int) -> None:
        super().__init__()
        self.b1 = nn.Sequential(*_cbr(cin, n1, 1))
        self.b2 = nn.Sequential(*_cbr(cin, r3, 1), *_cbr(r3, n3, 3))
        self.b3 = nn.Sequential(*_cbr(cin, r5, 1), *_cbr(r5, n5, 3), *_cbr(n5, n5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), *_cbr(cin, pool, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNetCifar(nn.Module):
    """Stem conv3x3(192) → Inception 3a-3b, pool, 4a-4e, pool, 5a-5b → global pool → FC."""

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        width = width_fraction("googlenet", width, "every layer of GoogLeNet (a 192-channel stem at 1.0)")

        def w(c: int) -> int:
            return max(1, int(c * width))

        stem = w(192)
        self.stem = nn.Sequential(*_cbr(in_channels, stem, 3))
        layers: list[nn.Module] = []
        c = stem
        for spec in _MODULES:
            if spec == "M":
                layers.append(nn.MaxPool2d(3, 2, 1))
                continue
            n1, r3, n3, r5, n5, pool = (w(v) for v in spec)
            layers.append(Inception(c, n1, r3, n3, r5, n5, pool))
            c = n1 + n3 + n5 + pool
        self.inception = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.inception(self.stem(x))), 1))


@register_model
def googlenet(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> GoogLeNetCifar:
    """GoogLeNet for 32x32 inputs (1.53G MACs, 6.17M parameters); ``width`` scales every layer."""
    return GoogLeNetCifar(num_classes=num_classes, in_channels=in_channels, width=width)
