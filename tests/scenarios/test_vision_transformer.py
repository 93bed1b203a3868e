"""Vision transformers: attention heads, MLP neurons and residual branches gated, removed exactly.

A ViT written by hand in timm's style (fused qkv, pre-norm blocks, GELU MLP, class token) and
the zoo's: ``attach(structures=("block", "head", "channel"))`` finds every head, every hidden
neuron and both residual branches of every block (attention, MLP); with about 30% of the
factors zero, ``prune`` gives the gated model's outputs with fewer heads and MACs, and the
compact model saves and loads.
"""

from __future__ import annotations

import torch
from torch import nn

import sss
from conftest import synthetic_dataset
from sss.train import TrainConfig, Trainer

from .helpers import assert_exact_and_smaller, random_gated


class UserAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, by_width: bool = False) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.by_width = num_heads, dim // num_heads, by_width
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1) * self.head_dim**-0.5).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.proj(out.reshape(b, n, c) if self.by_width else out.reshape(b, n, -1))


class UserBlock(nn.Module):
    def __init__(self, dim: int, heads: int, by_width: bool) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), UserAttention(dim, heads, by_width)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UserViT(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2, by_width: bool = False) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 10, dim) * 0.02)
        self.blocks = nn.ModuleList(UserBlock(dim, heads, by_width) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 5)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def _heads(model: nn.Module) -> list[int]:
    return [m.num_heads for m in model.modules() if hasattr(m, "num_heads")]


def test_a_hand_written_vit_loses_heads_neurons_and_residual_branches_exactly():
    model, x = UserViT(), torch.randn(3, 1, 12, 12)
    report = sss.find_structures(model, x, ("block", "head", "channel"))
    assert report.names("head") == ["blocks.0.attn", "blocks.1.attn"]
    assert report.names("block") == ["blocks.0", "blocks.1"]
    assert {"blocks.0.mlp.0", "blocks.1.mlp.0"} <= set(report.names("channel"))
    gated = random_gated(model, x, ("block", "head", "channel"), zero_prob=0.3, seed=3)
    assert [r.weight.numel() for r in sss.gates(gated) if r.kind == "block"] == [2, 2]  # attention, MLP
    compact = assert_exact_and_smaller(gated, x)  # outputs equal, fewer MACs, save/load round trip
    assert sum(_heads(compact)) < 8 or sss.structures.removed_blocks(compact)


def test_each_residual_branch_of_a_transformer_block_goes_on_its_own():
    """λ = (0, 0.7): the attention branch goes, the MLP branch stays (and the other way round);
    (0, 0): the block is the identity. The history names the branches and replays."""
    model, x = sss.models.create("vit_fmnist", depth=3), torch.randn(2, 1, 28, 28)
    gated = sss.attach(model, x, structures=("block",)).eval()
    with torch.no_grad():
        for ref, lam in zip(sss.gates(gated), ([0.0, 0.7], [0.5, 0.0], [0.0, 0.0]), strict=True):
            ref.weight.copy_(torch.tensor(lam))
    compact = assert_exact_and_smaller(gated, x)
    assert sss.structures.removed_blocks(compact) == ["blocks.0[0]", "blocks.1[1]", "blocks.2[0]", "blocks.2[1]"]
    assert {"op": "remove_block", "path": "blocks.1", "branches": [1]} in sss.structures.history(compact)


def test_the_zoo_vit_removes_heads_and_keeps_the_head_dim():
    model, x = sss.models.create("vit_fmnist", depth=2), torch.randn(2, 1, 28, 28)
    gated = random_gated(model, x, ("head", "channel"), zero_prob=0.3, seed=5)
    compact = assert_exact_and_smaller(gated, x)
    assert sum(_heads(compact)) < 8
    for block in compact.blocks:
        attn = block.attn
        assert attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim == 3 * attn.proj.in_features


def test_attention_that_reshapes_by_its_width_loses_heads_too():
    """``reshape(B, N, C)`` after the heads cannot run with fewer heads as written: the compact
    attention runs a traced forward with the heads' width there (``width_free_attention``)."""
    model, x = UserViT(by_width=True), torch.randn(2, 1, 12, 12)
    gated = random_gated(model, x, ("head",), zero_prob=0.3, seed=5)
    compact = assert_exact_and_smaller(gated, x)
    assert sum(_heads(compact)) < 8


def test_a_mac_target_on_the_zoo_vit_lands_and_removes_exactly(tmp_path):
    cfg = TrainConfig(model="vit_fmnist", model_kwargs={"img_size": 12, "depth": 2, "embed_dim": 32},
                      structures=["head", "channel"], gamma=0.01, target_macs=0.5, epochs=2, freeze_epoch=1,
                      after_freeze="continue", lr=0.01, batch_size=32, val_size=64, channels_last=False,
                      out_dir=str(tmp_path))  # fmt: skip
    lines: list[str] = []
    result = Trainer(cfg, train_data=synthetic_dataset(320), log=lines.append, progress=False).fit()
    landing = next(line for line in lines if line.startswith("budget:"))
    assert "NOT reached" not in landing
    x = torch.randn(4, 1, 12, 12)
    macs = sss.count(result.compact, x[:1])[0] / result.history[0]["dense_macs"]
    assert abs(macs - 0.5) <= 0.02 * 0.5
    with torch.no_grad():
        a, b = result.selected.eval()(x), sss.prune(result.selected).eval()(x)
    assert float((a - b).abs().max() / a.abs().max()) < 1e-5
