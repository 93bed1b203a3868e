"""A channel search that does not settle: Torch-Pruning follows the reshapes of a convolutional
attention (Visformer's: a 1×1 conv gives q, k and v, reshaped by head and position and back) around
a cycle, each time with other indices, until memory runs out. sss stops it, reports that layer's
channels with the reason, and gates the rest of the model."""

from __future__ import annotations

import torch
from torch import nn

import sss
from sss.structures import tracing

from .helpers import assert_exact_and_smaller, random_gated


class ConvAttention(nn.Module):
    """Visformer's attention, in small: ``qkv`` and ``proj`` are 1×1 convs over a feature map."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, self.head_dim, -1).permute(1, 0, 2, 4, 3).unbind(0)
        x = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(x.permute(0, 1, 3, 2).reshape(b, -1, h, w))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.attn = ConvAttention()
        self.mlp = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 1))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.attn(x)
        x = x + self.mlp(x)
        return self.head(x.mean((2, 3)))


def test_a_search_that_does_not_settle_is_reported_and_the_rest_is_gated():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6)
    report = sss.find_structures(Net().eval(), x, "channel")
    reasons = [s for s in report.skipped if s.startswith("attn.qkv:")]
    assert len(reasons) == 1 and "does not settle" in reasons[0], report.skipped
    assert "mlp.0" in report.names("channel")
    gated = random_gated(Net(), x, ("block", "channel"))
    assert_exact_and_smaller(gated, x)


def test_the_indexed_groups_are_torch_prunings_groups():
    """The set lookup that replaces Torch-Pruning's scan finds the same groups, item for item."""
    import torch_pruning as tp

    model, x = Net().eval(), torch.randn(2, 3, 6, 6)
    ours = tracing.build_graph(model, x)
    theirs = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    for layer in (model.stem[0], model.mlp[0], model.mlp[3]):
        width = tracing.out_width(layer)
        fn = tp.prune_conv_out_channels
        a = ours.get_pruning_group(layer, fn, list(range(width)))
        b = theirs.get_pruning_group(layer, fn, list(range(width)))
        assert [(i.dep.target.name, i.idxs) for i in a] == [(i.dep.target.name, i.idxs) for i in b]
