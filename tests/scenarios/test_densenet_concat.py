"""DenseNet: each layer's output is concatenated to all later inputs, so one channel appears at
a different offset in every later layer's input; the transition layer reads them all."""

import torch
from torch import nn

from .helpers import assert_exact_and_smaller, random_gated


class DenseLayer(nn.Module):
    """Pre-activation BN-ReLU-conv, output concatenated to the input."""

    def __init__(self, cin, growth):
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(torch.relu(self.bn(x)))], 1)


class DenseNetTiny(nn.Module):
    def __init__(self, growth=6):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.block1 = nn.Sequential(*[DenseLayer(8 + i * growth, growth) for i in range(3)])
        c = 8 + 3 * growth
        self.trans = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 12, 1, bias=False), nn.AvgPool2d(2))
        self.block2 = nn.Sequential(*[DenseLayer(12 + i * growth, growth) for i in range(2)])
        self.norm = nn.BatchNorm2d(12 + 2 * growth)
        self.fc = nn.Linear(12 + 2 * growth, 10)

    def forward(self, x):
        x = self.block2(self.trans(self.block1(self.stem(x))))
        return self.fc(torch.relu(self.norm(x)).mean((2, 3)))


def test_densenet_concat_channels():
    x = torch.randn(2, 3, 8, 8)
    model = DenseNetTiny()
    gated = random_gated(model, x, ("channel",), seed=6)
    compact = assert_exact_and_smaller(gated, x)
    # every dense layer's growth shrank and every later reader agrees on the concat width
    c = compact.stem.out_channels
    for layer in compact.block1:
        assert layer.bn.num_features == layer.conv.in_channels == c
        c += layer.conv.out_channels
    assert compact.trans[2].in_channels == c < model.trans[2].in_channels
