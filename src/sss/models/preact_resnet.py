"""Pre-activation bottleneck ResNet-164 (He et al. 2016, "Identity mappings"), as in SSS §4."""

from __future__ import annotations

import torch
from torch import nn

from sss.models.layers import conv1x1, conv3x3, he_init
from sss.models.registry import register_model
from sss.structures.gate import fold_output_scale
from sss.structures.residual import ResidualBlock


class PreActBottleneck(ResidualBlock):
    """``shortcut + λ·conv3(BN-ReLU(conv2(BN-ReLU(conv1(BN-ReLU(x))))))``.

    As in the official SSS code, a projection shortcut reads the pre-activated input
    ``relu(bn1(x))``; when λ = 0 the first block of a stage therefore keeps BN1-ReLU and
    the strided 1x1 projection, and every other block disappears.
    """

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.preact = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.branch = nn.Sequential(
            conv1x1(cin, planes), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            conv3x3(planes, planes, stride), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            conv1x1(planes, cout),
        )  # fmt: skip
        self.projection = stride != 1 or cin != cout
        self.shortcut: nn.Module = conv1x1(cin, cout, stride) if self.projection else nn.Identity()
        self.gate: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.preact(x)
        skip = self.shortcut(h) if self.projection else x
        return skip + self.gated_branch(h)

    def removed_form(self) -> nn.Module | None:
        return nn.Sequential(*self.preact, self.shortcut) if self.projection else None

    def fold_scale(self, scale: torch.Tensor) -> None:
        fold_output_scale(self.branch[-1], scale)


class PreActResNet(nn.Module):
    """conv3x3(16) → three stages of bottlenecks (16, 32, 64 planes ×4) → BN-ReLU → pool → FC."""

    def __init__(self, depth: int, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 9:
            raise ValueError(f"pre-activation bottleneck ResNet depth must be 9n+2, got {depth}")
        n = (depth - 2) // 9
        self.stem = conv3x3(in_channels, 16)
        cin = 16
        for i, planes in enumerate((16, 32, 64)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(PreActBottleneck(cin, planes, stride if j == 0 else 1))
                cin = planes * PreActBottleneck.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.head_act = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(self.head_act(x)), 1))


@register_model
def preact_resnet164(*, num_classes: int = 10, in_channels: int = 3) -> PreActResNet:
    """Pre-activation bottleneck ResNet-164 (18 blocks per stage), the SSS paper's CIFAR ResNet."""
    return PreActResNet(164, num_classes=num_classes, in_channels=in_channels)
