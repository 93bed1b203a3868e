"""`round_to` keeps widths a multiple of N exactly; `ignore` keeps chosen layers and blocks."""

import pytest
import torch
from torch import nn

import sss

from .helpers import assert_exact_and_smaller, assert_round_trip, random_gated


@pytest.mark.parametrize("round_to", [1, 4, 8])
def test_round_to_keeps_multiples_and_equality(round_to):
    x = torch.randn(2, 3, 32, 32)
    gated = random_gated(sss.models.create("vgg16_bn", width=0.25), x, ("channel",), zero_prob=0.7)
    compact = assert_exact_and_smaller(gated, x, round_to=round_to)  # and save → load
    for m in compact.modules():
        if isinstance(m, nn.Conv2d) and m.in_channels != 3:
            assert m.in_channels % round_to == 0  # every full width of this VGG is a multiple of 8
    widths = [m.out_channels for m in sss.prune(gated).modules() if isinstance(m, nn.Conv2d)]
    rounded = [m.out_channels for m in compact.modules() if isinstance(m, nn.Conv2d)]
    assert all(r >= w for r, w in zip(rounded, widths, strict=True))


def test_ignore_excludes_layers_and_blocks():
    x = torch.randn(1, 1, 28, 28)
    gated = random_gated(sss.models.create("lenet5"), x, ("channel",), ignore=["features.0"])
    assert [g.weight.numel() for g in sss.gates(gated)] == [50, 500]
    assert_round_trip(gated, x)  # the gated model: the history's attach records the ignore list
    assert_exact_and_smaller(gated, x)
    model = sss.models.create("resnet20")
    gated = sss.attach(model, structures=("block",), ignore=["layer1"])
    assert all(not g.name.startswith("layer1") for g in sss.gates(gated)) and len(sss.gates(gated)) == 6
