"""Squeeze-and-excitation inside a residual block: ``x * sigmoid(fc2(relu(fc1(pool(x)))))``.
The SE output is coupled to the block's channels; its hidden layer is a channel group of its own."""

import torch
from torch import nn

import sss

from .helpers import assert_exact_and_smaller, random_gated


class SEBlock(nn.Module):
    def __init__(self, c, reduction=4):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.fc1, self.fc2 = nn.Conv2d(c, c // reduction, 1), nn.Conv2d(c // reduction, c, 1)

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(out.mean((2, 3), keepdim=True)))))
        return torch.relu(x + out * w)


class SENet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(SEBlock(16), SEBlock(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_squeeze_excitation_channels():
    x = torch.randn(2, 3, 8, 8)
    gated = random_gated(SENet(), x, ("channel",), seed=5)
    names = {g.name for g in sss.gates(gated)}
    assert {"blocks.0.fc1.gate", "blocks.1.fc1.gate"} <= names  # SE hidden units
    assert "blocks.0.bn1.gate" in names  # conv1-bn1: gated after its BN
    assert len(names) == 2 * 2 + 1  # per block: conv1, SE hidden; plus the stream (stem, fc2, bn2)
    compact = assert_exact_and_smaller(gated, x)
    assert compact.blocks[0].fc2.out_channels == compact.stem[0].out_channels < 16
