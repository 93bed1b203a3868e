"""MobileNetV2 inverted residuals: 1x1 expand → depthwise 3x3 → 1x1 project, with a residual
add when the shape allows. A depthwise conv carries its input channels to its output."""

import torch
from torch import nn

import sss

from .helpers import assert_exact_and_smaller, random_gated


def conv_bn(cin, cout, k=1, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6(inplace=True)) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(conv_bn(cin, hidden), conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                  conv_bn(hidden, cout, act=False))  # fmt: skip

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2ish(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 8, 3, 2), InvertedResidual(8, 8, 1, 4), InvertedResidual(8, 12, 2, 4),
            InvertedResidual(12, 12, 1, 4), conv_bn(12, 32),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def test_inverted_residual_channels():
    x = torch.randn(2, 3, 16, 16)
    gated = random_gated(MobileNetV2ish(), x, ("channel",), seed=2)
    names = [g.name for g in sss.gates(gated)]
    # three expansions (each with its depthwise conv), two residual streams, the last 1x1
    assert len(names) == 3 + 2 + 1
    compact = assert_exact_and_smaller(gated, x)
    dw = compact.features[1].conv[1][0]
    assert dw.groups == dw.in_channels == dw.out_channels < 32


def test_inverted_residual_blocks_and_channels():
    x = torch.randn(2, 3, 16, 16)
    gated = random_gated(MobileNetV2ish(), x, ("block", "channel"), seed=3)
    # only the blocks with a residual sum are blocks; the strided one is not
    assert [g.name for g in sss.gates(gated) if g.kind == "block"] == ["features.1.gate", "features.3.gate"]
    assert_exact_and_smaller(gated, x)
