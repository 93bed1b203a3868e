"""DenseNet-40 for CIFAR (Huang et al. 2017), GAL's channel-mask model: three dense blocks of
BN-ReLU-conv3x3 layers, each concatenating ``growth`` channels to its input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sss.models.layers import he_init
from sss.models.registry import register_model


class DenseLayer(nn.Module):
    """``cat(x, conv3x3(relu(bn(x))))``: a pre-activation layer that adds ``growth`` channels."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (no compression, as in DenseNet-40) then 2x2 average pooling."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 1, bias=False), nn.AvgPool2d(2))  # fmt: skip


class DenseNetCifar(nn.Module):
    """Stem conv3x3(16) → 3 dense blocks of ``(depth - 4) / 3`` layers with transitions → BN-ReLU-pool-FC."""

    def __init__(self, *, depth: int = 40, growth: int = 12, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 3:
            raise ValueError(f"DenseNet depth must be 3n+4, got {depth}")
        n = (depth - 4) // 3
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        c, stages = 16, []
        for i in range(3):
            stages.append(nn.Sequential(*[DenseLayer(c + j * growth, growth) for j in range(n)]))
            c += n * growth
            if i < 2:
                stages.append(Transition(c))
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.features(self.stem(x))))


@register_model
def densenet40(*, growth: int = 12, depth: int = 40, num_classes: int = 10, in_channels: int = 3) -> DenseNetCifar:
    """DenseNet-40 (k = 12, 1.06M parameters); ``depth`` and ``growth`` make smaller variants."""
    return DenseNetCifar(depth=depth, growth=growth, num_classes=num_classes, in_channels=in_channels)
