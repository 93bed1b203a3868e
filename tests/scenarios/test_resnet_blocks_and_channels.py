"""Post-activation ResNet with block and inner-channel factors together."""

import pytest
import torch

import sss

from .helpers import assert_exact_and_smaller, random_gated


@pytest.mark.parametrize("shortcut", ["projection", "pad"])
def test_blocks_and_channels_jointly(shortcut):
    x = torch.randn(2, 3, 16, 16)
    gated = random_gated(sss.models.create("resnet20", shortcut=shortcut), x, ("block", "channel"), seed=3)
    kinds = [r.kind for r in sss.gates(gated)]
    # conv1 of each block, plus (projection only) the residual stream of each stage, whose
    # channels are coupled across the stem/shortcut and every block's last BN.
    streams = 3 if shortcut == "projection" else 0  # a zero-padding shortcut shifts channels: skipped
    assert kinds.count("block") == 9 and kinds.count("channel") == 9 + streams
    compact = assert_exact_and_smaller(gated, x)
    assert sss.structures.removed_blocks(compact)


def test_preact_bottleneck_channels():
    x = torch.randn(2, 3, 8, 8)
    model = sss.models.create("preact_resnet164")
    gated = random_gated(model, x, ("block", "channel"), seed=1)
    # conv1 and conv2 of each bottleneck, the stem, and the three residual streams (gated at
    # every producer and at each pre-activation BN that reads them).
    assert sum(r.kind == "channel" for r in sss.gates(gated)) == 2 * 54 + 1 + 3
    assert_exact_and_smaller(gated, x)
