"""Plain conv chain: conv-BN-ReLU ×3 → pool → linear."""

import torch
from torch import nn

from .helpers import assert_exact_and_smaller, random_gated


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 12, 3, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5),
        )  # fmt: skip

    def forward(self, x):
        return self.body(x)


def test_conv_chain():
    x = torch.randn(2, 3, 12, 12)
    gated = random_gated(Chain(), x, ("channel",))
    assert len([m for m in gated.modules() if type(m).__name__ == "ChannelGated"]) == 3
    compact = assert_exact_and_smaller(gated, x)
    widths = [m.out_channels for m in compact.modules() if isinstance(m, nn.Conv2d)]
    assert all(w < full for w, full in zip(widths, (8, 16, 12), strict=True))
    assert compact.body[-1].in_features == widths[-1]
