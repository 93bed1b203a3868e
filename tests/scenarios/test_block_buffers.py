"""A block whose forward reads a buffer of its own that is not part of its state (timm's Swin V2-Cr
``attn_mask``: ``register_buffer(..., persistent=False)``). The traced block copies the buffer;
it stays out of the state as it was, so the compact model's saved weights fit the model rebuilt
from its unpruned form."""

from __future__ import annotations

import copy

import torch
from torch import nn

import sss

from .helpers import assert_exact_and_smaller, assert_round_trip, random_gated


class MaskedBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.rand(1, 8, 1, 1), persistent=False)
        self.register_buffer("shift", torch.rand(1, 8, 1, 1))  # a persistent one stays persistent
        self.conv = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x * self.mask + self.shift)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(MaskedBlock(), MaskedBlock())
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_a_blocks_own_non_persistent_buffer_stays_out_of_the_saved_state():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    gated = random_gated(Net(), x, ("block",))
    assert "blocks.0.mask" not in gated.state_dict() and "blocks.0.shift" in gated.state_dict()
    assert_exact_and_smaller(gated, x)  # saves, loads from the unpruned model, same outputs


def test_a_compact_model_from_a_plain_deep_copy_saves_and_loads():
    """``copy.deepcopy`` of a traced block (torch rebuilds the ``GraphModule``) registers the
    buffer as persistent again: the saved file then holds it, and it loads into the rebuilt
    model's own buffer."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    copied = copy.deepcopy(random_gated(Net(), x, ("block",)))
    compact = sss.prune(copied)
    assert_round_trip(compact, x, Net())
