"""Inception-style module: four parallel branches concatenated along channels."""

import torch
from torch import nn

import sss

from .helpers import assert_exact_and_smaller, random_gated


def cbr(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Inception(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.b1 = cbr(cin, 8, 1)
        self.b2 = nn.Sequential(cbr(cin, 6, 1), cbr(6, 8, 3))
        self.b3 = nn.Sequential(cbr(cin, 4, 1), cbr(4, 6, 3), cbr(6, 6, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), cbr(cin, 4, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 12, 3)
        self.a, self.b = Inception(12), Inception(26)  # each outputs 8 + 8 + 6 + 4 channels
        self.fc = nn.Linear(26, 10)

    def forward(self, x):
        return self.fc(self.b(self.a(self.stem(x))).mean((2, 3)))


def test_inception_branch_channels():
    x = torch.randn(2, 3, 8, 8)
    gated = random_gated(GoogLeNetTiny(), x, ("channel",), seed=7)
    assert len(sss.gates(gated)) == 1 + 2 * 7  # stem; every conv of both modules
    compact = assert_exact_and_smaller(gated, x)
    with torch.no_grad():
        width_a = compact.a(compact.stem(x)).shape[1]
    assert compact.b.b1[0].in_channels == width_a < 26
