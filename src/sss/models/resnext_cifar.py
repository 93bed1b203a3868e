"""ResNeXt-29 for CIFAR (Xie et al. 2017, §5.3): bottleneck blocks with a grouped 3x3 conv,
the model of SSS's group experiments (cardinality pruned by group factors, depth by blocks)."""

from __future__ import annotations

import torch
from torch import nn

from sss.models.layers import conv1x1, he_init
from sss.models.registry import register_model
from sss.structures.gate import fold_output_scale
from sss.structures.residual import ResidualBlock


class ResNeXtBlock(ResidualBlock):
    """``relu(shortcut(x) + λ·bn3(conv3(relu(bn2(gconv(relu(bn1(conv1(x)))))))))``, where ``gconv``
    is a 3x3 conv with ``cardinality`` groups of ``width // cardinality`` channels each."""

    def __init__(self, cin: int, cout: int, width: int, cardinality: int, stride: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            conv1x1(cin, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            conv1x1(width, cout), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
        self.gate: nn.Module = nn.Identity()
        self.post = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.shortcut(x) + self.gated_branch(x))

    def removed_form(self) -> nn.Module | None:
        # The input is a ReLU output (x ≥ 0), so relu(x) = x: an identity block vanishes.
        return None if isinstance(self.shortcut, nn.Identity) else nn.Sequential(*self.shortcut, nn.ReLU(inplace=True))

    def fold_scale(self, scale: torch.Tensor) -> None:
        fold_output_scale(self.branch[-1], scale)


class ResNeXtCifar(nn.Module):
    """Stem conv3x3(64) → three stages of three blocks (outputs 64·widen·(1, 2, 4) channels,
    grouped width cardinality·base_width·(1, 2, 4)) → global pool → FC."""

    def __init__(
        self, *, cardinality: int = 8, base_width: int = 64, widen: int = 4, num_classes: int = 10,
        in_channels: int = 3, depth: int = 29,
    ) -> None:  # fmt: skip
        super().__init__()
        if (depth - 2) % 9:
            raise ValueError(f"ResNeXt depth must be 9n+2, got {depth}")
        n = (depth - 2) // 9
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True))  # fmt: skip
        cin = 64
        for i in range(3):
            cout, width = 64 * widen * 2**i, cardinality * base_width * 2**i
            blocks = [ResNeXtBlock(cin if j == 0 else cout, cout, width, cardinality, 2 if i and not j else 1)
                      for j in range(n)]  # fmt: skip
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model
def resnext29(
    *, cardinality: int = 8, base_width: int = 64, widen: int = 4, num_classes: int = 10, in_channels: int = 3
) -> ResNeXtCifar:
    """ResNeXt-29 (8x64d by default: 8 groups of 64 channels in the first stage, outputs 256/512/1024)."""
    return ResNeXtCifar(cardinality=cardinality, base_width=base_width, widen=widen, num_classes=num_classes,
                        in_channels=in_channels)  # fmt: skip
