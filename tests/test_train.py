"""The training engine: learning, logging, atomic checkpoints, exact resume, NaN handling."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import sss
from conftest import synthetic_dataset
from sss.serialization import load_state
from sss.train import CHECKPOINT, METRICS, TrainConfig, Trainer, load_config


def _cfg(tmp_path, **kw):
    base = TrainConfig(
        model="resnet20", model_kwargs={"width": 4}, val_size=64, epochs=2, batch_size=32, lr=0.05, gamma=0.05,
        augment_pad=1, out_dir=str(tmp_path / "run"), channels_last=False,
    )  # fmt: skip
    return dataclasses.replace(base, **kw)


# Resume tests use a step schedule: cosine depends on `epochs`, which a resume may extend.
RESUMABLE = {"schedule": "step", "milestones": [2]}


def _quiet(msg):
    pass


def test_fit_logs_checkpoints_and_saves(tmp_path):
    data = synthetic_dataset(320)
    lines = []
    result = Trainer(_cfg(tmp_path), train_data=data, log=lines.append, progress=False).fit()
    run = tmp_path / "run"
    records = [json.loads(s) for s in (run / METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train_loss", "val_acc", "zero_factors", "compact_macs", "lr"} <= records[0].keys()
    assert len(lines) == 2 and "zero factors" in lines[0] and "compact MACs" in lines[0]
    assert (run / CHECKPOINT).is_file() and (run / "compact.safetensors").is_file()
    # What the loop guarantees on any CPU: finite figures in range. How far 12 steps get on this
    # task depends on the CPU's rounding (37.5% on one machine); learning itself is checked with a
    # wide margin on real data (test_e2e_fashion_mnist.py).
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in records)
    assert all(0 <= r["val_acc"] <= 100 and r["compact_macs"] <= r["dense_macs"] for r in records)
    assert len(result.factor_trace) >= 2 and len(result.factor_trace[0]["values"]) == 9


def test_resume_matches_uninterrupted_run(tmp_path):
    data = synthetic_dataset(256)
    straight = Trainer(_cfg(tmp_path / "a", epochs=3, **RESUMABLE), train_data=data, log=_quiet, progress=False).fit()
    Trainer(_cfg(tmp_path / "b", epochs=1, **RESUMABLE), train_data=data, log=_quiet, progress=False).fit()
    resumed_trainer = Trainer(_cfg(tmp_path / "b", epochs=3, **RESUMABLE), train_data=data, log=_quiet, progress=False)
    resumed = resumed_trainer.fit(resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    # APG momentum travelled through the checkpoint too.
    va, vb = (
        load_state(root / "run" / CHECKPOINT)["factors_opt"]["state"] for root in (tmp_path / "a", tmp_path / "b")
    )
    assert va.keys() == vb.keys()
    assert all(torch.allclose(va[k]["momentum_buffer"], vb[k]["momentum_buffer"], atol=1e-6) for k in va)
    assert len((tmp_path / "b" / "run" / METRICS).read_text().splitlines()) == 3


def test_resume_refuses_a_different_model_but_takes_a_new_lr(tmp_path):
    data = synthetic_dataset(128)
    Trainer(_cfg(tmp_path, epochs=1, **RESUMABLE), train_data=data, log=_quiet, progress=False).fit()
    with pytest.raises(ValueError, match=r"differs in \['model_kwargs', 'structures'\]"):
        Trainer(_cfg(tmp_path, epochs=2, model_kwargs={"width": 8}, structures=["block", "channel"], **RESUMABLE),
                train_data=data, log=_quiet, progress=False).fit(resume=True)  # fmt: skip
    lines = []
    trainer = Trainer(_cfg(tmp_path, epochs=2, lr=0.01, weight_decay=0.0, gamma=0.2, **RESUMABLE), train_data=data,
                      log=lines.append, progress=False)  # fmt: skip
    trainer.fit(resume=True)
    assert "resume changes lr: 0.05 -> 0.01" in lines and "resume changes gamma: 0.05 -> 0.2" in lines
    assert trainer.history[-1]["lr"] == pytest.approx(0.01)
    assert all(g["weight_decay"] == 0.0 for g in trainer.weights_opt.param_groups)  # the new value, not the saved
    assert all(g["gamma"] == pytest.approx(0.2) for g in trainer.factors_opt.param_groups)


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path):
    data = synthetic_dataset(128)
    Trainer(_cfg(tmp_path, epochs=1), train_data=data, log=_quiet, progress=False).fit()
    ckpt = tmp_path / "run" / CHECKPOINT
    before = ckpt.read_bytes()
    trainer = Trainer(_cfg(tmp_path, epochs=2), train_data=data, log=_quiet, progress=False)
    trainer.load(ckpt)
    with torch.no_grad():
        trainer.model.fc.weight.fill_(float("nan"))
    trainer.load = lambda path: None  # keep the poisoned weights instead of reloading
    with pytest.raises(sss.TrainingDivergedError, match=r"loss became nan .* --resume"):
        trainer.fit(resume=True)
    assert ckpt.read_bytes() == before


def test_dense_baseline_has_no_factors(tmp_path):
    result = Trainer(_cfg(tmp_path, sparsity="none", epochs=1), train_data=synthetic_dataset(128), log=_quiet,
                     progress=False).fit()  # fmt: skip
    assert sss.gates(result.model) == []


def test_l1_sgd_baseline_prunes_with_threshold(tmp_path):
    cfg = _cfg(tmp_path, sparsity="sgd", prune_threshold=10.0, epochs=1)  # threshold above every λ
    result = Trainer(cfg, train_data=synthetic_dataset(128), log=_quiet, progress=False).fit()
    assert all(g.num_zero == 1 for g in sss.gates(result.model))
    assert len(sss.structures.removed_blocks(result.compact)) == 9


def test_config_overrides_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: resnet56\nepochs: 160\nmilestones: [80, 120]\nschedule: step\n")
    cfg = load_config(path, ["epochs=3", "model_kwargs.shortcut=pad", "gamma=0.02"])
    assert (cfg.model, cfg.epochs, cfg.milestones, cfg.model_kwargs, cfg.gamma) == (
        "resnet56", 3, [80, 120], {"shortcut": "pad"}, 0.02)  # fmt: skip
    assert [cfg.lr_factor(e) for e in (0, 79, 80, 120)] == pytest.approx([1, 1, 0.1, 0.01])
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, ["epoch=3"])
    with pytest.raises(ValueError, match="prune_threshold"):
        load_config(None, ["sparsity=sgd"])
    with pytest.raises(ValueError, match="resnet57"):
        load_config(None, ["model=resnet57"])


def test_the_demo_config_file_is_the_demo_recipe():
    from sss.recipes.demo import DEMO_CONFIG

    shipped = load_config(Path(__file__).parent.parent / "configs" / "fashion_mnist_resnet20_demo.yaml")
    assert dataclasses.replace(shipped, out_dir=DEMO_CONFIG.out_dir) == DEMO_CONFIG


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)  # validates every field (epochs >= 1 among them)
    model = sss.models.create(cfg.model, **cfg.model_kwargs)  # the recipe builds its model
    assert isinstance(model, torch.nn.Module) and cfg.structures  # and names what to gate
    if cfg.dataset == "imagefolder":  # the papers' ImageNet recipes: their structures exist there
        report = sss.find_structures(model, torch.zeros(1, 3, 64, 64), cfg.structures)
        assert report.missing == [] and len(report.structures["block"]) == 16


def test_evaluate_counts_correctly():
    data = synthetic_dataset(10)

    class Oracle(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.from_numpy(np.zeros(len(x), np.int64)), 4).float()

    acc, _ = sss.evaluate(Oracle(), data)
    assert acc == pytest.approx(100 * (data.labels == 0).mean())


def test_freeze_removes_blocks_and_resume_crosses_it(tmp_path):
    data = synthetic_dataset(256)
    lines = []
    cfg = _cfg(tmp_path / "a", epochs=3, freeze_epoch=1, gamma=2.0, **RESUMABLE)
    straight = Trainer(cfg, train_data=data, log=lines.append, progress=False).fit()
    assert sss.gates(straight.model) == []  # a plain compact model trains after the freeze
    removed = sss.structures.removed_blocks(straight.model)
    assert removed and any("selection frozen after epoch 1" in line for line in lines)
    # The freeze is exact: gated and compact validation accuracy are equal at that point.
    frozen_line = next(line for line in lines if "selection frozen" in line)
    gated_acc, compact_acc = (part.split("%")[0].split()[-1] for part in frozen_line.split(";")[1].split(","))
    assert gated_acc == compact_acc
    frozen = {"freeze_epoch": 1, "gamma": 2.0, **RESUMABLE}
    Trainer(_cfg(tmp_path / "b", epochs=2, **frozen), train_data=data, log=_quiet, progress=False).fit()
    resumed = Trainer(_cfg(tmp_path / "b", epochs=3, **frozen), train_data=data, log=_quiet, progress=False)
    resumed = resumed.fit(resume=True)
    assert sss.structures.removed_blocks(resumed.model) == removed
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    with pytest.raises(ValueError, match="freeze_epoch"):
        _cfg(tmp_path, epochs=3, freeze_epoch=3).validate()


def test_a_fractional_freeze_epoch_freezes_inside_the_epoch_and_resume_crosses_it(tmp_path):
    data = synthetic_dataset(256)  # 192 to train: 6 steps of 32 per epoch
    lines = []
    frozen = {"freeze_epoch": 0.5, "target_macs": 0.7, **RESUMABLE}  # the budget lands inside the epoch
    straight = Trainer(_cfg(tmp_path / "a", epochs=3, **frozen), train_data=data, log=lines.append, progress=False)
    straight = straight.fit()
    frozen_line = next(line for line in lines if "selection frozen" in line)
    assert "after step 3 of epoch 1" in frozen_line  # half of the first epoch's 6 steps
    gated_acc, compact_acc = (part.split("%")[0].split()[-1] for part in frozen_line.split(";")[1].split(","))
    assert gated_acc == compact_acc  # exact at the freeze, inside an epoch too
    assert sss.gates(straight.model) == [] and len(straight.history) == 3
    first = straight.history[0]  # the first epoch's record: the compact model the budget landed on
    assert first["zero_factors"] > 0 and first["compact_macs"] <= 0.72 * first["dense_macs"]
    Trainer(_cfg(tmp_path / "b", epochs=1, **frozen), train_data=data, log=_quiet, progress=False).fit()
    resumed = Trainer(_cfg(tmp_path / "b", epochs=3, **frozen), train_data=data, log=_quiet, progress=False)
    resumed = resumed.fit(resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    with pytest.raises(ValueError, match="whole number of epochs"):
        _cfg(tmp_path, epochs=3, freeze_epoch=0.5, after_freeze="retrain").validate()
    with pytest.raises(ValueError, match="the selection would take no step"):
        Trainer(_cfg(tmp_path / "c", epochs=2, freeze_epoch=0.01, gamma=2.0), train_data=data, log=_quiet)


def test_rewind_restarts_the_compact_model_from_initial_weights(tmp_path):
    data = synthetic_dataset(256)
    cfg = _cfg(tmp_path, epochs=2, freeze_epoch=1, after_freeze="rewind", gamma=0.5)
    trainer = Trainer(cfg, train_data=data, log=_quiet, progress=False)
    trainer.setup()  # what fit() does first: the training forward, the budget
    init = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.steps_per_epoch = len(trainer.train_data) // cfg.batch_size
    trainer._train_epoch()
    trainer.epoch = 1
    trainer._freeze_and_log()
    kept = [n for n, m in trainer.model.named_modules() if isinstance(m, sss.structures.ResidualBlock)]
    assert kept
    for block in kept:
        key = f"{block}.branch.0.weight"
        assert torch.equal(trainer.model.state_dict()[key], init[key])
    assert trainer.selected is not None and sss.gates(trainer.selected)  # the gated model at removal


def test_retrain_trains_the_compact_model_for_the_whole_schedule_again(tmp_path):
    cfg = _cfg(tmp_path, epochs=2, freeze_epoch=1, after_freeze="retrain", gamma=0.5, schedule="cosine")
    assert cfg.total_epochs == 3 and dataclasses.replace(cfg, after_freeze="rewind").total_epochs == 2
    result = Trainer(cfg, train_data=synthetic_dataset(256), log=_quiet, progress=False).fit()
    lrs = [r["lr"] for r in result.history]
    assert len(lrs) == 3 and lrs[1] == lrs[0] == cfg.lr and lrs[2] < lrs[1]  # the schedule restarts at the freeze
    assert result.selected is not None and sss.gates(result.compact) == []


def test_channel_factors_train_and_prune(tmp_path):
    cfg = _cfg(tmp_path, model="lenet5", model_kwargs={"image_size": 16}, structures=["channel"], gamma=0.3,
               epochs=2)  # fmt: skip
    data = synthetic_dataset(256, shape=(1, 16, 16))
    result = Trainer(cfg, train_data=data, log=_quiet, progress=False).fit()
    assert {g.kind for g in sss.gates(result.model)} == {"channel"}
    assert sss.gates(result.compact) == []
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(result.model.eval()(x), result.compact(x), atol=1e-5)
    loaded = sss.load(tmp_path / "run" / "compact")
    with torch.no_grad():
        assert torch.equal(loaded(x), result.compact(x))
    gated = sss.load(tmp_path / "run" / "model")
    assert [g.name for g in sss.gates(gated)] == [g.name for g in sss.gates(result.model)]


def test_gamma_mapping_in_config():
    cfg = load_config(None, ["structures=[block, channel]", "gamma={block: 0.1, channel: 0.01}"])
    assert cfg.gamma == {"block": 0.1, "channel": 0.01}
    with pytest.raises(ValueError, match="not in structures"):
        load_config(None, ["gamma={channel: 0.01}"])


class CountingTrainer(Trainer):
    """A third method written with the hooks alone: label smoothing, a figure, and a counter
    that the checkpoint carries."""

    def __init__(self, *args, **kw):
        self.batches_seen = 0
        super().__init__(*args, **kw)

    def batch_loss(self, x, y):
        self.batches_seen += 1
        logits = self.model(x)
        loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
        return sss.train.BatchResult(loss, logits, y, {"max_logit": float(logits.detach().abs().max())})

    def extra_state(self):
        return {"batches_seen": self.batches_seen}

    def load_extra_state(self, state):
        self.batches_seen = state["batches_seen"]


def test_a_method_built_on_the_hooks_logs_and_resumes(tmp_path):
    data = synthetic_dataset(128)
    first = CountingTrainer(_cfg(tmp_path, epochs=1, **RESUMABLE), train_data=data, log=_quiet, progress=False)
    first.fit()
    steps = first.steps_per_epoch
    assert first.batches_seen == steps and "max_logit" in first.history[0]
    resumed = CountingTrainer(_cfg(tmp_path, epochs=2, **RESUMABLE), train_data=data, log=_quiet, progress=False)
    resumed.fit(resume=True)
    assert resumed.batches_seen == 2 * steps


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_keeps_factors_fp32_and_zeros_exact(tmp_path, amp):
    cfg = _cfg(tmp_path, epochs=1, gamma=3.0, amp=amp, device="cpu", allow_collapse=True)
    result = Trainer(cfg, train_data=synthetic_dataset(256), log=_quiet, progress=False).fit()
    refs = sss.gates(result.model)
    assert all(r.weight.dtype == torch.float32 for r in refs)
    assert sum(r.num_zero for r in refs) > 0  # γ = 2 zeroes blocks within a few steps, in any precision
    x = torch.randn(4, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(result.model(x), result.compact(x), atol=1e-5)


def test_device_errors_are_clear():
    with pytest.raises(ValueError, match="device must be"):
        sss.train.runtime.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            sss.train.runtime.resolve_device("cuda")
