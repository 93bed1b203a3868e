"""Plain (non-residual) CNNs: LeNet-5 and VGG-16-BN, whose channels and neurons SSS selects."""

from __future__ import annotations

import torch
from torch import nn

from sss.models.layers import he_init, width_fraction
from sss.models.registry import register_model

# VGG-16 convolution widths; "M" is a 2x2 max-pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class LeNet5(nn.Module):
    """The Caffe LeNet-5 that GAL prunes (20-50-500): conv5x5(20)-pool-conv5x5(50)-pool-fc500-fc."""

    def __init__(self, *, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )  # fmt: skip
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"lenet5 needs image_size >= 16 (two 5x5 convs and two 2x2 pools), got {image_size}")
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(50 * side * side, 500), nn.ReLU(inplace=True), nn.Linear(500, num_classes)
        )
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class VGG(nn.Module):
    """VGG-16 with BatchNorm for small images (as in GAL and Network Slimming): 13 conv-BN-ReLU
    layers, five max-pools, global pooling, then a 512-unit hidden layer with BN and ReLU."""

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        width = width_fraction("vgg16_bn", width, "every layer of VGG-16 (64 to 512 channels at 1.0)")
        layers: list[nn.Module] = []
        cin = in_channels
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                cout = max(1, int(v * width))
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        hidden = max(1, int(512 * width))
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(cin, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model
def lenet5(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> LeNet5:
    """LeNet-5 (Caffe variant, 20-50-500 units), the model of GAL's MNIST experiment."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels, image_size=image_size)


@register_model
def vgg16_bn(*, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> VGG:
    """VGG-16-BN for CIFAR-sized inputs; ``width`` scales every layer (0.25 for quick runs)."""
    return VGG(num_classes=num_classes, in_channels=in_channels, width=width)
