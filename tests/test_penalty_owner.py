"""Issue 27: γ has one owner. Each factor group keeps its base γ; a budget sets only a scale,
through :func:`sss.optim.set_penalty_scale`; distance steering's zero momentum is set at build."""

import dataclasses

import pytest
import torch

import sss
from conftest import synthetic_dataset
from sss.budget.controller import BudgetController
from sss.optim import build_optimizers, set_penalty_scale
from sss.serialization import load_state, save_state
from sss.train import CHECKPOINT, TrainConfig, Trainer
from sss.train.checks import load_optimizer_state


class _Guarded(dict):
    """A param group that refuses every write made outside :func:`set_penalty_scale`."""

    writer_active = False

    def __setitem__(self, key, value):
        if not _Guarded.writer_active:
            raise AssertionError(f"param group key {key!r} written outside set_penalty_scale")
        super().__setitem__(key, value)


def _gated(structures=("block", "channel")):
    x = torch.zeros(1, 1, 12, 12)
    model = sss.attach(sss.models.create("resnet20", width=8, in_channels=1, num_classes=4), x,
                       structures=list(structures))  # fmt: skip
    return model, x


@pytest.mark.parametrize("steps", [None, 50], ids=["doubling", "distance"])
def test_the_budget_writes_gamma_only_through_set_penalty_scale(monkeypatch, steps):
    model, x = _gated()
    _, factors = build_optimizers(model, lr=0.1, gamma={"block": 0.02, "channel": 0.01},
                                  steered_by_distance=steps is not None)  # fmt: skip
    bases = [g["gamma_base"] for g in factors.param_groups]
    budget = BudgetController(model, x, "macs", 0.5, factors, selection_steps=steps)
    factors.param_groups[:] = [_Guarded(g) for g in factors.param_groups]
    calls = []

    def spy(optimizer, scale, **kw):
        calls.append(scale)
        _Guarded.writer_active = True
        try:
            set_penalty_scale(optimizer, scale, **kw)
        finally:
            _Guarded.writer_active = False

    monkeypatch.setattr("sss.budget.steering.set_penalty_scale", spy)
    with torch.no_grad():
        for ref in sss.gates(model):
            ref.weight.uniform_(0.2, 1.0)
    for _ in range(3):
        budget.after_step(model, factors)
    assert len(calls) == 3 and calls[-1] > 0  # dense is above the target: the penalty is on
    assert [g["gamma_base"] for g in factors.param_groups] == bases  # the base never moves
    assert all(g["gamma_scale"] == calls[-1] for g in factors.param_groups)


def test_set_penalty_scale_computes_the_old_budgets_products_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.ones(3)) for _ in range(3)]
    bases = (torch.rand(3, generator=gen, dtype=torch.float64) * 0.1).tolist()
    opt = sss.optim.APG([{"params": [p], "gamma": b} for p, b in zip(params, bases, strict=True)], lr=0.1, gamma=0.0)
    values = torch.rand(21, generator=gen, dtype=torch.float64).tolist()
    for value, lr in zip(values, (0.1, 0.0371, 0.003) * 7, strict=True):
        for group in opt.param_groups:
            group["lr"] = lr
        scale = 2 ** (value * 13 - 3)
        set_penalty_scale(opt, scale)  # doubling: base * scale
        assert [g["gamma"] for g in opt.param_groups] == [b * scale for b in bases]
        set_penalty_scale(opt, value, threshold=True)  # distance: edge / lr * base / top
        assert [g["gamma"] for g in opt.param_groups] == [value / lr * b / max(bases) for b in bases]
    set_penalty_scale(opt, 0.0)
    assert all(g["gamma"] == 0.0 and g["gamma_base"] == b for g, b in zip(opt.param_groups, bases, strict=True))


@pytest.mark.parametrize("method", ["apg", "sgd"])
def test_distance_steering_has_no_factor_momentum_from_build_time(tmp_path, method):
    model, _ = _gated()
    weights, factors = build_optimizers(model, lr=0.1, method=method, steered_by_distance=True)
    assert all(g["momentum"] == 0.0 for g in factors.param_groups)
    assert all(g["momentum"] == 0.9 for g in weights.param_groups)  # the weights keep theirs
    assert all(g["momentum"] == 0.9 for g in build_optimizers(model, lr=0.1, method=method)[1].param_groups)
    cfg = TrainConfig(model="resnet20", model_kwargs={"width": 4}, val_size=32, epochs=2, batch_size=32,
                      out_dir=str(tmp_path / "run"), channels_last=False, target_macs=0.6, sparsity=method,
                      prune_threshold=0.01 if method == "sgd" else 0.0)  # fmt: skip
    for changes, momentum in (({"selection_start": 1}, 0.0), ({}, 0.9)):  # distance (auto), doubling
        trainer = Trainer(dataclasses.replace(cfg, **changes), train_data=synthetic_dataset(64), progress=False)
        assert all(g["momentum"] == momentum for g in trainer.factors_opt.param_groups)  # before any budget exists


def _old_format(state: dict) -> dict:
    """``state`` as written before issue 27: the groups' ``gamma`` only (the steered value)."""
    groups = [{k: v for k, v in g.items() if k not in ("gamma_base", "gamma_scale")} for g in state["param_groups"]]
    return {**state, "param_groups": groups}


def test_an_old_format_optimizer_state_loads():
    model, _ = _gated()
    _, factors = build_optimizers(model, lr=0.1, gamma=0.01)
    set_penalty_scale(factors, 8.0)
    old = _old_format(factors.state_dict())
    assert all("gamma_base" not in g for g in old["param_groups"])
    fresh = build_optimizers(model, lr=0.1, gamma=0.01)[1]
    fresh.load_state_dict(old)  # plain load: the saved γ stays, the base is the one built
    assert all(g["gamma"] == 0.01 * 8.0 and g["gamma_base"] == 0.01 for g in fresh.param_groups)
    set_penalty_scale(fresh, 2.0)
    assert all(g["gamma"] == 0.01 * 2.0 for g in fresh.param_groups)
    trained = build_optimizers(model, lr=0.1, gamma=0.01)[1]
    load_optimizer_state(trained, old)  # as a resume: the hyperparameters built now
    assert all(g["gamma"] == g["gamma_base"] == 0.01 and g["gamma_scale"] == 1.0 for g in trained.param_groups)


def test_a_checkpoint_from_before_resumes_as_a_new_one(tmp_path):
    data = synthetic_dataset(128)
    cfg = TrainConfig(model="resnet20", model_kwargs={"width": 4}, val_size=32, epochs=1, batch_size=32,
                      schedule="step", milestones=[2], target_macs=0.6, channels_last=False)  # fmt: skip
    for name in ("new", "old"):
        Trainer(dataclasses.replace(cfg, out_dir=str(tmp_path / name)), train_data=data, progress=False,
                log=lambda _: None).fit()  # fmt: skip
    path = tmp_path / "old" / CHECKPOINT
    state = load_state(path)
    state["factors_opt"] = _old_format(state["factors_opt"])
    save_state(state, path)
    results = [Trainer(dataclasses.replace(cfg, out_dir=str(tmp_path / name), epochs=2), train_data=data,
                       progress=False, log=lambda _: None).fit(resume=True) for name in ("new", "old")]  # fmt: skip
    a, b = (r.model.state_dict() for r in results)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
