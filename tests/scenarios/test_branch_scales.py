"""Residual branches that end in an op λ commutes with, after their last layer: torchvision's
stochastic depth (its ``stochastic_depth`` function stays a call in the trace: Swin's blocks), a
scale by a constant (NFNet's ``α · branch``, a division, LayerScale's ``branch · γ``), dropout.
Each is a block: λ = 0 removes the branch, any other λ folds into the layer before the op, exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sss

from .helpers import assert_exact_and_smaller, random_gated


class Block(nn.Module):
    """``x + end(conv(x))``, with ``end`` the op under test."""

    def __init__(self, end: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1))
        self.end = end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.end(self.conv(x))


class Scale(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.gamma = nn.Parameter(torch.rand(8))  # LayerScale's γ (timm's ViTs, ConvNeXt)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "layer-scale":
            return y * self.gamma.reshape(1, -1, 1, 1)  # a constant: computed from a parameter alone
        if self.kind == "layer-scale-in-place":
            return y.mul_(self.gamma.reshape(1, -1, 1, 1))
        return {"left": 0.2 * y, "right": y * 0.2, "divide": y / 4}[self.kind]


class Net(nn.Module):
    """Three blocks ``Block(end())``, or three ``end()`` blocks themselves (``wrap=False``)."""

    def __init__(self, end, wrap: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(*(Block(end()) if wrap else end() for _ in range(3)))
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def _stochastic_depth() -> nn.Module:
    ops = pytest.importorskip("torchvision.ops")
    return ops.StochasticDepth(0.1, "row")


ENDS = {
    "stochastic-depth": _stochastic_depth,
    "scale-left": lambda: Scale("left"),
    "scale-right": lambda: Scale("right"),
    "divide": lambda: Scale("divide"),
    "layer-scale": lambda: Scale("layer-scale"),
    "layer-scale-in-place": lambda: Scale("layer-scale-in-place"),
    "dropout": lambda: nn.Dropout(0.1),
}


@pytest.mark.parametrize("end", list(ENDS.values()), ids=list(ENDS))
def test_a_branch_ending_in_an_op_lambda_commutes_with_is_a_block(end):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    report = sss.find_structures(Net(end).eval(), x, "block")
    assert report.names("block") == ["blocks.0", "blocks.1", "blocks.2"], report.skipped
    gated = random_gated(Net(end), x, ("block",))
    assert_exact_and_smaller(gated, x)


def test_a_branch_that_ends_in_no_layer_keeps_its_factor_as_a_scale(tmp_path):
    """``y · sigmoid(y)`` (an SE module's end) scales the branch by something that depends on it:
    λ does not commute with it, so no layer takes λ; the compact block keeps it as a scale of its
    own (a buffer, saved and rebuilt on load), exactly."""

    class SelfGate(nn.Module):
        def forward(self, y: torch.Tensor) -> torch.Tensor:
            return y * torch.sigmoid(y)

    def build() -> nn.Module:
        torch.manual_seed(0)
        return Net(SelfGate).eval()

    x = torch.randn(2, 3, 8, 8)
    gated = random_gated(build(), x, "block", zero_prob=0.4)
    assert sss.find_structures(build(), x, "block").names("block") == [f"blocks.{i}" for i in range(3)]
    kept = [i for i, r in enumerate(sss.gates(gated)) if float(r.weight) != 0]
    compact = assert_exact_and_smaller(gated, x)
    assert [i for i in range(3) if hasattr(compact.blocks[i], "sss_branch_scales")] == kept


class PostNormBlock(nn.Module):
    """``x + LayerNorm(mlp(x))`` on tokens: a post-norm branch (Swin V2's), λ folds into the norm's affine."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.mlp(x))


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.blocks = nn.Sequential(PostNormBlock(), PostNormBlock(), PostNormBlock())
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(x)).mean(1))


def test_a_post_norm_branch_is_a_block():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3)
    assert sss.find_structures(Tokens().eval(), x, "block").names("block") == ["blocks.0", "blocks.1", "blocks.2"]
    assert_exact_and_smaller(random_gated(Tokens(), x, ("block",)), x)


class ChannelsLastBlock(nn.Module):
    """torchvision's ConvNeXt block in small: a depthwise conv, then channels-last LayerNorm and
    linear layers, permuted back to channels-first at the branch's end."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.LayerNorm(8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.dw(x).permute(0, 2, 3, 1)))
        return x + y.permute(0, 3, 1, 2).contiguous()


def test_a_branch_ending_in_a_layout_op_is_a_block():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    report = sss.find_structures(Net(ChannelsLastBlock, wrap=False).eval(), x, "block")
    assert report.names("block") == ["blocks.0", "blocks.1", "blocks.2"], report.skipped
    assert_exact_and_smaller(random_gated(Net(ChannelsLastBlock, wrap=False), x, ("block",)), x)
