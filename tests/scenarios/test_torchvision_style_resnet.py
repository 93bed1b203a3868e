"""torchvision-style post-activation ResNets (BasicBlock and Bottleneck with a downsample
branch and one ReLU module shared inside each block): channels coupled through the adds."""

import pytest
import torch
from torch import nn

import sss

from .helpers import assert_exact_and_smaller, random_gated


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)  # used twice, as in torchvision
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        width, cout = planes, planes * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = 16, []
        for i, n in enumerate(layers):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, 16 * 2**i, 2 if i and not j else 1))
                cin = 16 * 2**i * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# Basic: conv1 of 6 blocks + 3 stage streams (the stem joins layer1's). Bottleneck: conv1 and
# conv2 of 6 blocks + 3 streams + the stem (layer1.0's downsample separates it from layer1).
@pytest.mark.parametrize(("block", "groups"), [(BasicBlock, 6 + 3), (Bottleneck, 12 + 3 + 1)])
def test_torchvision_style_resnet_channels(block, groups):
    x = torch.randn(2, 3, 16, 16)
    model = ResNet(block, [2, 2, 2])
    gated = random_gated(model, x, ("channel",), seed=4)
    assert len(sss.gates(gated)) == groups
    compact = assert_exact_and_smaller(gated, x)
    assert compact.fc.in_features < model.fc.in_features  # the last stage's stream shrank
    last = compact.layer2[1].conv3 if block is Bottleneck else compact.layer2[1].conv2
    assert compact.layer2[0].downsample[0].out_channels == last.out_channels


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_torchvision_style_blocks_found_by_tracing(block):
    x = torch.randn(2, 3, 16, 16)
    gated = random_gated(ResNet(block, [2, 2, 2]), x, ("block", "channel"), seed=9)
    blocks = [g.name for g in sss.gates(gated) if g.kind == "block"]
    assert blocks == [f"layer{i}.{j}.gate" for i in (1, 2, 3) for j in (0, 1)]
    compact = assert_exact_and_smaller(gated, x)
    assert sss.gates(compact) == []


def test_block_pattern_with_zero_factor_keeps_the_downsample():
    x = torch.randn(2, 3, 16, 16)
    gated = sss.attach(ResNet(BasicBlock, [1, 1, 1]), x, ("block",)).eval()
    with torch.no_grad():
        for g in sss.gates(gated):
            g.weight.zero_()
    compact = sss.prune(gated)
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in compact.layer2.modules())
    assert isinstance(compact.layer2[0].get_submodule("downsample.0"), nn.Conv2d)
    with torch.no_grad():
        assert torch.allclose(gated(x), compact(x), atol=1e-6)
