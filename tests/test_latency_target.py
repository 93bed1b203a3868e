"""Latency targets: a latency model fitted on this machine predicts what removal saves, the
selection lands at or under the target by the prediction, and a timing of the compact model
corrects a biased prediction. The mechanics are tested with a fixed model and a fake clock
(timings differ per machine); one real run checks the plumbing end to end."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import sss
from conftest import synthetic_dataset
from sss.budget.controller import BudgetController
from sss.budget.targets import LATENCY_NOISE, is_relative, parse_latency_target
from sss.measure.latency_model import LatencyModel, architecture_features, calibrate_latency
from sss.train import TrainConfig, Trainer, load_config
from sss.train import budget as budget_module

X = torch.zeros(1, 1, 12, 12)


def _gated(width: int = 8, trained: bool = False) -> torch.nn.Module:
    """ResNet-20 with block and channel factors; ``trained``: factors spread over (0.1, 1) as a
    selection leaves them, so that the landing has an order to follow."""
    model = sss.attach(sss.models.create("resnet20", width=width, in_channels=1, num_classes=4), X,
                       structures=["block", "channel"])  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for ref in sss.gates(model) if trained else []:
            ref.weight.copy_(0.1 + 0.9 * torch.rand(ref.weight.shape, generator=gen))
    return model


def _optimizer(model: torch.nn.Module) -> sss.optim.APG:
    return sss.optim.APG([r.weight for r in sss.gates(model)], lr=0.1, gamma=0.01)


def test_the_fit_never_rewards_cost_and_every_removal_predicts_a_saving():
    model = _gated()
    fitted = calibrate_latency(model, X, variants=6, rounds=2)
    assert all(torch.equal(r.weight, torch.ones_like(r.weight)) for r in sss.gates(model))  # unchanged by the fit
    assert all(c >= 0 for c in fitted.coefficients[1:])  # the non-intercept coefficients
    dense = fitted.predict(model, X)
    with torch.no_grad():
        for ref in sss.gates(model):
            ref.weight.zero_()
    assert fitted.predict(model, X) < dense or fitted.coefficients[1:] == [0.0, 0.0, 0.0]


def test_features_shrink_with_every_removal():
    model = _gated()
    dense = architecture_features(sss.prune(model), X)
    with torch.no_grad():
        sss.gates(model)[0].weight.view(-1)[0] = 0.0
    fewer = architecture_features(sss.prune(model), X)
    assert all(f <= d for f, d in zip(fewer, dense, strict=True)) and fewer != dense


def _controller(model, target_fraction: float) -> BudgetController:
    fixed = LatencyModel([0.05, 5e-8, 0.01, 2e-7], batch=1, device="cpu")  # ms: per MAC, layer, output element
    dense = fixed.predict(model, X)
    return BudgetController(model, X, "latency", target_fraction * dense, _optimizer(model), latency=fixed)


@pytest.mark.parametrize("fraction", [0.5, 0.7])
def test_the_landing_is_at_or_under_the_predicted_target(fraction):
    model = _gated(trained=True)
    budget = _controller(model, fraction)
    cost, lines = budget.land(model)
    assert 0.9 * budget.target.value <= cost <= budget.target.value  # at or under, and not far under
    assert "NOT" not in lines[0]


def test_a_timing_over_the_target_makes_the_landing_aim_lower():
    model = _gated(trained=True)
    budget = _controller(model, 0.6)
    goal = budget.target.value
    clock = []

    def slow_clock(compact):  # this machine is 15% slower than the prediction says
        clock.append(1.15 * budget.latency.predict(compact, X))
        return clock[-1]

    lines = budget.land_measured(model, slow_clock)
    assert len(clock) >= 2 and clock[-1] <= goal * (1 + LATENCY_NOISE)
    assert budget.target.value == goal  # the aim is lowered for the landing only
    assert not any("NOT" in line for line in lines)


def test_an_unreachable_latency_is_refused_before_training():
    model = _gated()
    with pytest.raises(ValueError, match="below what this model can reach"):
        _controller(model, 1e-6)


def test_latency_config_errors():
    with pytest.raises(ValueError, match="give one target, not target_macs and target_latency"):
        load_config(None, ["target_macs=0.5", "target_latency=2"])
    with pytest.raises(ValueError, match="target_latency"):
        load_config(None, ["target_latency=-1"])


def test_a_latency_target_is_milliseconds_or_a_fraction_of_dense():
    assert parse_latency_target(2.5, 10.0) == 2.5 and parse_latency_target("2.5", 10.0) == 2.5
    assert parse_latency_target("0.7x", 10.0) == pytest.approx(7.0)
    assert is_relative("0.7x") and not is_relative("2.5") and not is_relative(2.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        parse_latency_target("1.5x", 10.0)
    with pytest.raises(ValueError, match="neither milliseconds"):
        load_config(None, ["target_latency=fast"])
    model = _gated()
    fixed = LatencyModel([0.05, 5e-8, 0.01, 2e-7], batch=1, device="cpu")
    budget = BudgetController(model, X, "latency", "0.6x", _optimizer(model), latency=fixed)
    assert budget.target.value == pytest.approx(0.6 * fixed.predict(model, X))


@pytest.mark.parametrize("relative", [False, True])
def test_a_latency_target_run_times_its_compact_model(tmp_path, relative, monkeypatch):
    # One latency fit for the probe and the run: an absolute target taken from one timing pass can
    # sit above a second fit's dense prediction on a loaded or slower machine (a spurious "nothing to
    # remove"); with one fit the target is 0.85 of the very prediction the run compares it with.
    fits: list[LatencyModel] = []

    def calibrate_once(*args, **kwargs) -> LatencyModel:
        fits[:] = fits or [calibrate_latency(*args, **kwargs)]
        return fits[0]

    monkeypatch.setattr(budget_module, "calibrate_latency", calibrate_once)
    cfg = TrainConfig(model="resnet20", model_kwargs={"width": 8}, structures=["block", "channel"], val_size=64,
                      epochs=2, batch_size=32, lr=0.05, gamma={"block": 0.05, "channel": 0.005}, freeze_epoch=1,
                      out_dir=str(tmp_path / "run"), channels_last=False, schedule="step")  # fmt: skip
    lines: list[str] = []
    probe = Trainer(dataclasses.replace(cfg, target_latency="0.85x"), train_data=synthetic_dataset(96),
                    progress=False, log=lambda _: None)  # fmt: skip
    probe.setup()  # the budget (and its latency model) is built at setup
    dense_ms = next(c for c in probe.callbacks if c.name == "budget").controller.target.dense
    # A load on the machine may shift any timing: the plumbing is what is tested here.
    run_cfg = dataclasses.replace(cfg, target_latency="0.85x" if relative else 0.85 * dense_ms, allow_collapse=True)
    trainer = Trainer(run_cfg, train_data=synthetic_dataset(384), log=lines.append, progress=False)
    trainer.setup()
    target = next(c for c in trainer.callbacks if c.name == "budget").controller.target.value
    result = trainer.fit()
    assert any(line.startswith("latency model at batch 1") for line in lines)
    measured = [float(line.split("measured ")[1].split()[0]) for line in lines if "budget: measured" in line]
    assert measured  # the landing timed the compact model
    assert any("in the same pass" in line for line in lines) == relative  # a fraction is timed against dense
    # At or under the target within the noise, or the log says plainly that it was not reached. The
    # log rounds to 0.01 ms (1.1979 reads 1.20 against a bound of 1.198: a CI run failed on that).
    printed = 0.005
    assert measured[-1] <= target * (1 + LATENCY_NOISE) + printed or any("NOT reached" in line for line in lines)
    assert sss.count(result.compact, X)[0] < sss.count(sss.prune(probe.model), X)[0]
