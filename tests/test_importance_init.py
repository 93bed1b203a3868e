"""Factors from importance per MAC (``factor_init: importance``): the same function, factors
spread over all kinds on one scale, the least important per MAC lowest."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sss
from sss.budget.importance import init_from_importance, taylor_importance
from sss.measure import structure_costs


def test_importance_init_keeps_the_function_and_ranks_every_kind_on_one_scale():
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    model = sss.models.create("vit_fmnist", embed_dim=32, depth=2)
    gated = sss.attach(model, x[:1], structures=("block", "embedding", "head", "channel")).eval()
    with torch.no_grad():
        before = gated(x)
    importance = taylor_importance(gated, [(x[:8], y[:8]), (x[8:], y[8:])], F.cross_entropy)
    assert init_from_importance(gated, importance, x[:1]) == 5  # one embedding, two head and two neuron gates
    with torch.no_grad():
        torch.testing.assert_close(gated(x), before, rtol=1e-4, atol=1e-5)
    costs = structure_costs(gated, x[:1])
    layer_gates = [r for r in sss.gates(gated) if r.kind != "block"]
    values = torch.cat([r.weight.detach() for r in layer_gates])
    assert float(values.min()) == pytest.approx(0.001) and float(values.max()) == pytest.approx(1.0)  # over all gates
    score = torch.cat([importance[r.name] / costs[r.name] for r in layer_gates])
    assert torch.equal(values.argsort(), score.argsort())  # one order: importance per MAC
    assert all(bool((r.weight == 1).all()) for r in sss.gates(gated) if r.kind == "block")


def test_from_trained_weights_transformer_kinds_start_by_importance():
    from sss.train import TrainConfig
    from sss.train.plan import resolve_plan

    def plan(structures, **kw):
        return resolve_plan(TrainConfig(structures=structures, init="dense.safetensors", **kw), 1000).factor_init

    assert plan(["channel"]) == "magnitude"
    assert plan(["head", "channel"]) == plan(["embedding"]) == "importance"
    assert plan(["head"], factor_init="magnitude") == "magnitude"
    assert resolve_plan(TrainConfig(structures=["head"]), 1000).factor_init == "one"  # from scratch


def test_factor_floor_sets_where_the_weakest_factor_starts():
    from sss.data import ArrayDataset
    from sss.train import TrainConfig
    from sss.train.plan import resolve_plan

    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    data = ArrayDataset(images.numpy(), torch.randint(0, 10, (32,)).numpy(), mean=(0.5,), std=(0.25,))
    x = torch.zeros(1, 1, 28, 28)
    gated = sss.attach(sss.models.create("vit_fmnist", embed_dim=32, depth=2), x, structures=("head", "channel"))
    cfg = TrainConfig(structures=["head", "channel"], init="dense.safetensors", factor_floor=0.05)
    plan = resolve_plan(cfg, 32)
    assert (plan.factor_init, plan.floor) == ("importance", 0.05)
    plan.start_factors(gated, data, x, batch_size=16, seed=0)
    values = torch.cat([r.weight.detach() for r in sss.gates(gated)])
    assert float(values.min()) == pytest.approx(0.05) and float(values.max()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="factor_floor"):
        TrainConfig(factor_floor=1.5).validate()


def test_keep_fraction_starts_each_gates_strongest_at_one_and_keeps_the_function():
    from sss.train import TrainConfig
    from sss.train.plan import resolve_plan

    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    gated = sss.attach(sss.models.create("vit_fmnist", embed_dim=32, depth=2), x[:1],
                       structures=("embedding", "head", "channel")).eval()  # fmt: skip
    with torch.no_grad():
        before = gated(x)
    importance = taylor_importance(gated, [(x, y)], F.cross_entropy)
    init_from_importance(gated, importance, x[:1], keep=0.5)
    with torch.no_grad():
        torch.testing.assert_close(gated(x), before, rtol=1e-4, atol=1e-5)
    costs = structure_costs(gated, x[:1])
    for ref in sss.gates(gated):
        n, held = ref.weight.numel(), ref.weight.detach() == 1
        assert int(held.sum()) >= -(-n // 2)  # at least half of every gate, rounded up
        top = (importance[ref.name] / costs[ref.name]).topk(-(-n // 2)).indices
        assert bool(held[top].all())  # the strongest by importance per MAC
    plan = resolve_plan(TrainConfig(structures=["head"], init="dense.safetensors", keep_fraction=0.3), 100)
    assert plan.keep == 0.3
    with pytest.raises(ValueError, match="keep_fraction"):
        TrainConfig(keep_fraction=1.0).validate()
    with pytest.raises(ValueError, match="keep_fraction holds part of a ranked start"):
        resolve_plan(TrainConfig(keep_fraction=0.5), 100)  # from scratch: every factor starts at 1
    TrainConfig(keep_fraction=0.5).validate()  # a template a benchmark completes per method (its init) passes
    assert resolve_plan(TrainConfig(keep_fraction=0.5, factor_init="magnitude"), 100).keep == 0.5
