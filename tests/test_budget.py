"""Budgets: the selection is steered toward a MACs or parameter target and lands within ±2% of
it, exactly (the pruned model equals the gated one); unreachable targets are refused first."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import sss
from conftest import synthetic_dataset
from sss.budget.controller import BudgetController
from sss.budget.landing import land_fine
from sss.budget.targets import parse_budget
from sss.train import TrainConfig, Trainer, load_config


def _cfg(tmp_path, **kw):
    base = TrainConfig(model="resnet20", model_kwargs={"width": 8}, structures=["block", "channel"], val_size=64,
                       epochs=2, batch_size=32, lr=0.05, gamma={"block": 0.05, "channel": 0.005},
                       out_dir=str(tmp_path / "run"), channels_last=False, freeze_epoch=1, schedule="step")  # fmt: skip
    return dataclasses.replace(base, **kw)


def test_parse_budget():
    assert parse_budget(0.5, 40e6, "macs") == 20e6
    assert parse_budget("18M", 40e6, "macs") == 18e6 and parse_budget("250k", 1e6, "params") == 250e3
    assert parse_budget("2.5e6", 40e6, "macs") == 2.5e6
    with pytest.raises(ValueError, match="neither a fraction"):
        parse_budget("half", 1.0, "macs")


@pytest.mark.parametrize(("key", "target"), [("target_macs", 0.3), ("target_macs", 0.5), ("target_macs", 0.7),
                                             ("target_params", 0.5)])  # fmt: skip
def test_the_selection_lands_within_two_percent_exactly(tmp_path, key, target):
    lines = []
    trainer = Trainer(_cfg(tmp_path, **{key: target}), train_data=synthetic_dataset(384), log=lines.append,
                      progress=False)  # fmt: skip
    result = trainer.fit()
    which = 0 if key == "target_macs" else 1
    x = torch.zeros(1, 1, 12, 12)
    dense = sss.count(sss.models.create("resnet20", width=8, in_channels=1, num_classes=4), x)[which]
    final = sss.count(result.compact, x)[which]
    assert abs(final / dense - target) <= 0.02 * target  # within ±2% of the target, on any CPU
    assert any(line.startswith("budget: ") and "NOT" not in line for line in lines)
    frozen = next(line for line in lines if "selection frozen" in line)  # the removal is exact
    gated_acc, compact_acc = (part.split("%")[0].split()[-1] for part in frozen.split(";")[1].split(","))
    assert gated_acc == compact_acc


def test_an_unreachable_target_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"below what this model can reach: with every factor zero it keeps"):
        Trainer(_cfg(tmp_path, target_macs="1k"), train_data=synthetic_dataset(128), progress=False).setup()


def test_target_config_errors():
    with pytest.raises(ValueError, match="give one target, not target_macs and target_params"):
        load_config(None, ["target_macs=0.5", "target_params=0.5"])
    with pytest.raises(ValueError, match="needs factors"):
        load_config(None, ["target_macs=0.5", "sparsity=none"])
    with pytest.raises(ValueError, match="neither a fraction"):
        load_config(None, ["target_macs=half"])
    assert load_config(None, ["target_macs=18M"]).target_macs == "18M"


@pytest.mark.parametrize("start", ["too_expensive", "too_cheap"])
def test_the_exact_fallback_lands_fine_structures_and_keeps_the_blocks(start):
    """Where the per-structure estimate misjudges a pattern (shared channels of removed blocks),
    the fallback moves channels only, by exact counts, into the band."""
    x = torch.zeros(1, 1, 12, 12)
    model = sss.attach(sss.models.create("resnet20", width=8, in_channels=1, num_classes=4), x,
                       structures=["block", "channel"])  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for ref in sss.gates(model):
            ref.weight.copy_(0.1 + 0.9 * torch.rand(ref.weight.shape, generator=gen))
    opt = sss.optim.APG([r.weight for r in sss.gates(model)], lr=0.1, gamma=0.01)
    budget = BudgetController(model, x, "macs", 0.5, opt)
    with torch.no_grad():
        blocks = [r for r in sss.gates(model) if r.kind == "block"]
        blocks[1].weight.zero_()  # one block gone: a coarse pattern the landing must not touch
        if start == "too_cheap":
            for ref in sss.gates(model):
                if ref.kind == "channel":
                    ref.weight.view(-1)[1:] = 0.0
    lo, hi = budget.target.value * 0.98, budget.target.value * 1.02
    cost = budget.target.exact(model)
    assert (cost > hi) if start == "too_expensive" else (cost < lo)
    landed = land_fine(budget.target, budget.ranking, model, lo, hi, cost)
    assert lo <= landed <= hi and landed == budget.target.exact(model)
    assert [int(r.num_zero) for r in sss.gates(model) if r.kind == "block"] == [0, 1] + [0] * (len(blocks) - 2)


def test_a_band_the_blocks_cannot_hit_lands_under_the_target_not_over():
    """Blocks alone are ~10% of the MACs each: no pattern may fall inside ±2%; a budget is a
    ceiling, so the landing ends under it."""
    x = torch.zeros(1, 1, 12, 12)
    model = sss.attach(sss.models.create("resnet20", width=8, in_channels=1, num_classes=4), x,
                       structures=["block"])  # fmt: skip
    with torch.no_grad():
        for k, ref in enumerate(sss.gates(model)):
            ref.weight.fill_(0.1 * (k + 1))
    opt = sss.optim.APG([r.weight for r in sss.gates(model)], lr=0.1, gamma=0.01)
    budget = BudgetController(model, x, "macs", 0.35, opt)
    cost, lines = budget.land(model)
    assert cost <= budget.target.value * 1.02 and cost == budget.target.exact(model)
    assert cost >= budget.target.value * 0.98 or "under the target rather than over" in lines[0]


def test_distance_steering_ranks_by_time_to_zero():
    """Steered by distance, a factor's threshold is the step's edge times its gate's price (its γ
    relative to the largest), so the removal order is ``|λ| / price``: a gate with four times the
    γ loses its factors first at equal |λ|; the doubling steering ranks by |λ| alone."""
    x = torch.zeros(1, 1, 12, 12)
    model = sss.attach(sss.models.create("resnet20", width=8, in_channels=1, num_classes=4), x,
                       structures=["channel"])  # fmt: skip
    refs = sss.gates(model)
    with torch.no_grad():
        for ref in refs:
            ref.weight.fill_(0.5)
        refs[1].weight.view(-1)[0] = 0.4  # the smallest |λ|, in a gate of the low price
    dear = refs[0].name
    groups = sss.optim.factor_param_groups(model, 0.01, {r.name: 4.0 if r.name == dear else 1.0 for r in refs})
    for steps, first in ((100, dear), (None, refs[1].name)):
        budget = BudgetController(model, x, "macs", 0.5, sss.optim.APG(groups, lr=0.1, gamma=0.01),
                                  selection_steps=steps)  # fmt: skip
        order = budget.ranking.removal_order(model, fine_only=False)
        assert order[0][0] == first
        if steps is not None:  # every factor of the dear gate (but the one it keeps) before any other
            n = refs[0].weight.numel() - 1
            assert {name for name, _ in order[:n]} == {dear}
