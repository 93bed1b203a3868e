"""VGG-16-BN with an MLP head (BatchNorm1d hidden layer), as GAL and SSS prune it."""

import torch

import sss

from .helpers import assert_exact_and_smaller, random_gated


def test_vgg16_bn_channels():
    x = torch.randn(2, 3, 32, 32)
    gated = random_gated(sss.models.create("vgg16_bn", width=0.25), x, ("channel",))
    assert len(sss.gates(gated)) == 14  # 13 conv layers + the hidden linear layer
    compact = assert_exact_and_smaller(gated, x)
    assert compact.classifier[3].num_features == compact.classifier[2].out_features


def test_golden_size():
    model = sss.models.create("vgg16_bn")
    # GAL's VGG-16 baseline: 313.73M FLOPs, 14.98M params (their counter adds a little).
    assert sss.count(model, torch.zeros(1, 3, 32, 32)) == (313_463_808, 14_987_722)
    assert sss.count(sss.models.create("lenet5"), torch.zeros(1, 1, 28, 28)) == (2_293_000, 431_080)
