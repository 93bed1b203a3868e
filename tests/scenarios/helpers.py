"""Shared checks of the scenario catalogue: compact == gated, shapes shrink, MACs drop."""

from __future__ import annotations

import torch
from torch import nn

import sss
from conftest import randomise_batchnorm


def random_gated(model: nn.Module, example: torch.Tensor, structures, zero_prob: float = 0.5, seed: int = 0):
    """Attaches factors, randomises BN statistics and the gate pattern (with at least one zero)."""
    gated = sss.attach(model, example, structures=structures)
    gen = torch.Generator().manual_seed(seed)
    randomise_batchnorm(gated, gen)
    with torch.no_grad():
        for ref in sss.gates(gated):
            keep = torch.rand(ref.weight.shape, generator=gen) >= zero_prob
            keep.view(-1)[0] = False
            ref.weight.copy_(keep * torch.empty(ref.weight.shape).uniform_(0.2, 2.0, generator=gen))
    return gated.eval()


def assert_exact_and_smaller(gated: nn.Module, example: torch.Tensor) -> nn.Module:
    compact = sss.prune(gated)
    with torch.no_grad():
        a, b = gated(example), compact(example)
    assert a.shape == b.shape
    assert float((a - b).abs().max() / a.abs().max()) <= 1e-5
    assert sss.gates(compact) == []
    assert sss.count(compact, example[:1])[0] < sss.count(gated, example[:1])[0]
    return compact
