"""LeNet-5: conv channels through max-pool, flatten → linear columns, hidden neurons."""

import torch
from torch import nn

import sss

from .helpers import assert_exact_and_smaller, random_gated


def test_lenet5_channels_and_neurons():
    x = torch.randn(3, 1, 28, 28)
    gated = random_gated(sss.models.create("lenet5"), x, ("channel",))
    sizes = [r.weight.numel() for r in sss.gates(gated)]
    assert sizes == [20, 50, 500]
    compact = assert_exact_and_smaller(gated, x)
    conv2 = compact.features[3]
    fc1, fc2 = compact.classifier[1], compact.classifier[3]
    # Each surviving conv2 channel keeps its 4x4 block of fc1 columns.
    assert fc1.in_features == conv2.out_channels * 16
    assert fc2.in_features == fc1.out_features < 500
    assert isinstance(fc2, nn.Linear) and fc2.out_features == 10
