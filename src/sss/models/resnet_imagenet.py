"""ImageNet ResNet-50 and ResNeXt-50 (32x4d) with torchvision's layer names, so pretrained
torchvision weights load with ``load_state_dict`` and sss's saved models read like torchvision's.

The blocks are plain modules (``out = relu(bn3(...) + shortcut)``): ``sss.attach`` finds them by
tracing, like any user model's, and finds ResNeXt's groups with the group kind.
"""

from __future__ import annotations

import torch
from torch import nn

from sss.models.registry import register_model


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3 conv, "ResNet v1.5")."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet layout: conv1/bn1/relu/maxpool, layer1-4, avgpool, fc."""

    def __init__(self, layers: list[int], *, num_classes: int, in_channels: int, groups: int = 1,
                 width_per_group: int = 64) -> None:  # fmt: skip
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(inplanes, planes, 2 if b == 0 and i > 0 else 1, groups, width_per_group))
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model
def resnet50(*, num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-50 for ImageNet (16 bottleneck blocks), SSS's and GAL's ImageNet model."""
    return ResNet([3, 4, 6, 3], num_classes=num_classes, in_channels=in_channels)


@register_model
def resnext50_32x4d(*, num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNeXt-50 32x4d for ImageNet (16 blocks, 32 groups in each 3x3 conv), SSS's group model."""
    return ResNet([3, 4, 6, 3], num_classes=num_classes, in_channels=in_channels, groups=32, width_per_group=4)
