"""Models of the kinds users write that once pruned to a different function without a word:
in-place ops on a block's shortcut or input, one BatchNorm in two blocks, a per-channel buffer
read by width, an input normalisation on buffers. Each is exact after `prune` and after
`save`/`load` in both modes, or refused at attach with the module named."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sss

from .helpers import assert_exact_and_smaller, random_gated


class InplaceShortcut(nn.Module):
    """Scales its shortcut in place after the branch has read it."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        identity = x
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        identity.mul_(0.5)
        return F.relu(out + identity)


class InplaceReluInput(nn.Module):
    """Rectifies its (signed) input in place: the shortcut carries relu(x)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.bn1(self.conv1(F.relu(x, inplace=True)))
        return out + x


class Plain(nn.Module):
    def __init__(self, c: int, bn: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), bn or nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class Normalise(nn.Module):
    """ImageNet-style input normalisation on registered buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]))
        self.register_buffer("std", torch.tensor([0.2, 0.3, 0.25]))

    def forward(self, x):
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)


class Net(nn.Module):
    def __init__(self, blocks: list[nn.Module], c: int = 4, normalise: bool = False) -> None:
        super().__init__()
        self.norm = Normalise() if normalise else nn.Identity()
        self.stem, self.stem_bn = nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, 5)

    def forward(self, x):
        x = self.blocks(self.stem_bn(self.stem(self.norm(x))))
        return self.head(x.mean((2, 3)))


class WidthReadBuffer(nn.Module):
    """A per-channel buffer, all ones at attach, read by the width of the tensor it scales."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1), \
            nn.Linear(4, 5)  # fmt: skip
        self.register_buffer("scale", torch.ones(8))

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = y * self.scale[: y.shape[1]].view(1, -1, 1, 1)
        return self.head(F.relu(self.conv2(y)).mean((2, 3)))


def _assert_exact_in_train_mode(gated: nn.Module, compact: nn.Module, x: torch.Tensor) -> None:
    """Batch statistics instead of running ones: the compact model is the gated one there too."""
    g, c = copy.deepcopy(gated).train(), copy.deepcopy(compact).train()
    with torch.no_grad():
        a, b = g(x.clone()), c(x.clone())
    assert float((a - b).abs().max() / a.abs().max()) <= 1e-5


@pytest.mark.parametrize(
    ("block", "kinds"),
    [
        (InplaceShortcut, ("block",)),
        (InplaceReluInput, ("block",)),
        (InplaceShortcut, ("block", "channel")),
        (InplaceReluInput, ("block", "channel")),
    ],
)
@pytest.mark.parametrize("zero_prob", [0.0, 0.5])  # 0.0: only the first block goes, the rest fold λ
def test_inplace_ops_in_blocks_are_kept_exactly(block, kinds, zero_prob):
    x = torch.randn(4, 3, 8, 8)
    model = Net([block(4) for _ in range(3)])
    gated = random_gated(model, x, kinds, zero_prob=zero_prob)
    assert sum(g.kind == "block" for g in sss.gates(gated)) == 3
    compact = assert_exact_and_smaller(gated, x.clone())
    _assert_exact_in_train_mode(gated, compact, x)


def test_batchnorm_shared_by_two_blocks_is_refused_with_both_paths():
    shared = nn.BatchNorm2d(4)
    model = Net([Plain(4, shared), Plain(4, shared), Plain(4)])
    report = sss.find_structures(model, torch.randn(2, 3, 8, 8), ("block",))
    assert report.names("block") == ["blocks.2"]
    assert any(s.startswith("blocks.0: its blocks.0.bn2 is the same module as blocks.1.bn2") for s in report.skipped)
    gated = random_gated(model, torch.randn(2, 3, 8, 8), ("block",))
    assert_exact_and_smaller(gated, torch.randn(4, 3, 8, 8))


def test_buffer_read_by_width_is_not_gated():
    report = sss.find_structures(WidthReadBuffer(), torch.randn(2, 3, 8, 8), ("channel",))
    assert report.names("channel") == ["conv2"]
    assert any(s.startswith("conv1: removing its channel structures changes the output") for s in report.skipped)


@pytest.mark.parametrize("kinds", [("block",), ("block", "channel")])
def test_input_normalisation_attaches_and_prunes_exactly(kinds):
    x = torch.randn(4, 3, 8, 8)
    model = Net([Plain(4) for _ in range(3)], normalise=True)
    before = set(vars(model)) | {n for n, _ in model.named_modules()}
    gated = random_gated(model, x, kinds)
    assert set(vars(model)) | {n for n, _ in model.named_modules()} == before  # tracing added nothing
    assert not any("_tensor_constant" in k for k in gated.state_dict())
    compact = assert_exact_and_smaller(gated, x)
    _assert_exact_in_train_mode(gated, compact, x)


def test_traced_blocks_need_an_example_input():
    with pytest.raises(ValueError, match=r"blocks\.0 is a residual block found by tracing.*example_inputs"):
        sss.attach(Net([Plain(4)]), structures=("block",))
