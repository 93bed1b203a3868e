"""CIFAR-style ResNet-20/32/56/110 (He et al. 2016, §4.2): post-activation basic blocks."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from sss.models.layers import PadShortcut, channel_count, conv1x1, conv3x3, he_init
from sss.models.registry import register_model
from sss.structures.gate import fold_output_scale
from sss.structures.residual import ResidualBlock

Shortcut = Literal["projection", "pad"]


class BasicBlock(ResidualBlock):
    """``relu(shortcut(x) + λ·bn2(conv2(relu(bn1(conv1(x))))))``.

    Every block of a post-activation ResNet reads the output of a ReLU, so its input is
    non-negative; that is what makes an identity block with λ = 0 exactly removable
    (``relu(x) = x`` for ``x ≥ 0``).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: Shortcut = "projection") -> None:
        super().__init__()
        self.branch = nn.Sequential(
            conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            conv3x3(cout, cout), nn.BatchNorm2d(cout),
        )  # fmt: skip
        if stride == 1 and cin == cout:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "projection":
            self.shortcut = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
        elif shortcut == "pad":
            self.shortcut = PadShortcut(cin, cout, stride)
        else:
            raise ValueError(f"shortcut must be 'projection' or 'pad', got {shortcut!r}")
        self.gate: nn.Module = nn.Identity()
        self.post = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.shortcut(x) + self.gated_branch(x))

    def removed_form(self) -> nn.Module | None:
        if isinstance(self.shortcut, nn.Identity):
            return None
        if isinstance(self.shortcut, PadShortcut):  # zero-padding a non-negative input stays ≥ 0
            return self.shortcut
        return nn.Sequential(*self.shortcut, nn.ReLU(inplace=True))

    def fold_scale(self, scale: torch.Tensor) -> None:
        fold_output_scale(self.branch[-1], scale)


class CifarResNet(nn.Module):
    """Stem conv3x3(16) → three stages of ``depth`` blocks (16, 32, 64 channels) → pool → FC."""

    def __init__(
        self, depth: int, *, num_classes: int = 10, in_channels: int = 3, shortcut: Shortcut = "projection",
        width: int = 16,
    ) -> None:  # fmt: skip
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        width = channel_count(f"resnet{depth}", width, "the stem's channel count (stages of w, 2w, 4w channels)", 16)
        n = (depth - 2) // 6
        self.stem = nn.Sequential(conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        widths = [width, 2 * width, 4 * width]
        cin = width
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1, shortcut) for j in range(n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _builder(depth: int):
    def build(
        *, num_classes: int = 10, in_channels: int = 3, shortcut: Shortcut = "projection", width: int = 16
    ) -> CifarResNet:
        return CifarResNet(depth, num_classes=num_classes, in_channels=in_channels, shortcut=shortcut, width=width)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = (
        f"CIFAR ResNet-{depth}: {(depth - 2) // 6} basic blocks per stage of widths (w, 2w, 4w), w=16 by default; "
        "shortcut 'projection' (1x1 conv + BN) or 'pad' (option A)."
    )
    return register_model(build)


resnet20 = _builder(20)
resnet32 = _builder(32)
resnet56 = _builder(56)
resnet110 = _builder(110)
