"""Shared checks of the scenario catalogue: compact == gated, shapes shrink, MACs drop, and the
compact model survives save → load bit for bit (rebuilt from its unpruned form)."""

from __future__ import annotations

import copy
import tempfile
import weakref
from pathlib import Path

import torch
from torch import nn

import sss
from conftest import randomise_batchnorm

#: gated model → the unpruned model it was attached to (what `sss.load(base=...)` rebuilds from).
_BASES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def random_gated(model: nn.Module, example: torch.Tensor, structures, zero_prob: float = 0.5, seed: int = 0, **kw):
    """Attaches factors, randomises BN statistics and the gate pattern (with at least one zero)."""
    gated = sss.attach(model, example, structures=structures, **kw)
    _BASES[gated] = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    randomise_batchnorm(gated, gen)
    with torch.no_grad():
        for ref in sss.gates(gated):
            keep = torch.rand(ref.weight.shape, generator=gen) >= zero_prob
            keep.view(-1)[0] = False
            ref.weight.copy_(keep * torch.empty(ref.weight.shape).uniform_(0.2, 2.0, generator=gen))
    return gated.eval()


def assert_round_trip(model: nn.Module, example: torch.Tensor, base: nn.Module | None = None) -> None:
    """``sss.save`` then ``sss.load`` gives a model with bit-identical outputs (zoo models load
    without a base; any other model from the unpruned ``base``)."""
    with tempfile.TemporaryDirectory() as tmp:
        sss.save(model, Path(tmp) / "m")
        loaded = sss.load(Path(tmp) / "m", base=None if getattr(model, "sss_spec", None) else base)
    with torch.no_grad():
        assert torch.equal(loaded(example), model.eval()(example))


def assert_exact_and_smaller(gated: nn.Module, example: torch.Tensor, **prune_kw) -> nn.Module:
    compact = sss.prune(gated, **prune_kw)
    with torch.no_grad():
        a, b = gated(example), compact(example)
    assert a.shape == b.shape
    assert float((a - b).abs().max() / a.abs().max()) <= 1e-5
    assert sss.gates(compact) == []
    assert sss.count(compact, example[:1])[0] < sss.count(gated, example[:1])[0]
    if gated in _BASES:
        assert_round_trip(compact, example, _BASES[gated])
    return compact


class Logits(nn.Module):
    """A Hugging Face model that returns its logits (a tensor, as the scenario checks compare)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids).logits
