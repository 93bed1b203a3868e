"""Mistakes users make when setting up a run, each refused before training with one line in their
own terms: teachers that do not fit, targets too small to keep a path, compress's epochs, a
resume with another model, a zoo width of the wrong kind."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import sss
from conftest import synthetic_dataset
from sss.cli.main import main
from sss.errors import SelectionCollapsedError
from sss.measure import format_count
from sss.train import TrainConfig, Trainer
from sss.train.checks import check_collapse, resume_changes
from sss.train.distill import check_teacher

#: A fast CLI run on Fashion-MNIST: the errors below come before any training.
SMALL = ["--set", "train_subset=300", "--set", "val_size=100", "--set", "batch_size=50", "--set",
         "channels_last=false", "--epochs", "1"]  # fmt: skip


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = TrainConfig(model="resnet20", model_kwargs={"width": 4}, val_size=64, epochs=1, batch_size=32, lr=0.05,
                       gamma=0.05, out_dir=str(tmp_path / "run"), channels_last=False)  # fmt: skip
    return dataclasses.replace(base, **kw)


def _quiet(_: str) -> None:
    pass


def _saved(tmp_path, name: str, **kw) -> str:
    path = tmp_path / name
    sss.save(sss.models.create("resnet20", width=4, **kw), path)
    return str(path)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# -- 1. teachers are checked when loaded -----------------------------------------------------
def test_a_distillation_teacher_for_other_classes_or_images_is_refused_before_training(tmp_path):
    data = synthetic_dataset(128)  # 1x12x12 images, 4 classes
    other_classes = _saved(tmp_path, "five", num_classes=5, in_channels=1)
    cfg = _cfg(tmp_path, distill=4.0, distill_teacher=other_classes)
    with pytest.raises(ValueError, match=r"outputs of shape \[1, 5\], the student \[1, 4\]"):
        Trainer(cfg, train_data=data, log=_quiet, progress=False)
    rgb = _saved(tmp_path, "rgb", num_classes=4, in_channels=3)
    with pytest.raises(ValueError, match=r"refuses the run's input of shape 1x12x12 .*trained on these images"):
        Trainer(dataclasses.replace(cfg, distill_teacher=rgb), train_data=data, log=_quiet, progress=False)
    fits = _saved(tmp_path, "fits", num_classes=4, in_channels=1)
    trainer = Trainer(dataclasses.replace(cfg, distill_teacher=fits), train_data=data, log=_quiet, progress=False)
    assert trainer.distillation is not None and trainer.model.training  # the student's mode is restored


def test_a_distillation_teacher_that_does_not_fit_on_the_cli(tmp_path, capsys):
    teacher = _saved(tmp_path, "teacher", num_classes=5, in_channels=1)
    args = ["train", "--model", "resnet20", "--set", "model_kwargs.width=4", "--distill", "4", "--set",
            f"distill_teacher={teacher}", "--out", str(tmp_path / "run"), *SMALL]  # fmt: skip
    assert main(args) == 2
    err = _error(capsys)
    assert f"teacher (distill_teacher {teacher}) does not fit" in err and "[1, 5], the student [1, 10]" in err


def test_a_gal_teacher_that_does_not_fit_the_data_on_the_cli(tmp_path, capsys):
    gal = ["gal", "--out", str(tmp_path / "gal"), *SMALL]
    assert main([*gal, "--teacher", _saved(tmp_path, "five", num_classes=5, in_channels=1)]) == 2
    assert "[1, 5], the training data's 10 classes [1, 10]" in _error(capsys)
    assert main([*gal, "--teacher", _saved(tmp_path, "rgb", num_classes=10, in_channels=3)]) == 2
    assert "refuses the run's input of shape 1x28x28" in _error(capsys)


def test_an_out_of_memory_error_of_the_teacher_is_not_rephrased():
    class Hungry(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        check_teacher(Hungry(), torch.zeros(1, 1, 4, 4), (1, 10), "test")


# -- 2. a collapse near the target blames the target, not γ -----------------------------------
def _collapsible(tmp_path, target: float | None = None) -> Trainer:
    """LeNet-5 with channel factors (every factor zero cuts every path), optionally with a target."""
    cfg = _cfg(tmp_path, model="lenet5", model_kwargs={"image_size": 16}, structures=["channel"], target_macs=target)
    trainer = Trainer(cfg, train_data=synthetic_dataset(128, shape=(1, 16, 16)), log=_quiet, progress=False)
    trainer.setup()  # builds the budget callback
    return trainer


def _collapse(trainer: Trainer, only: str | None = None) -> SelectionCollapsedError:
    with torch.no_grad():
        for ref in sss.gates(trainer.model):
            if only is None or ref.name == only:
                ref.weight.zero_()
    compact = sss.prune(trainer.model)
    with pytest.raises(SelectionCollapsedError) as err:
        check_collapse(trainer.model, compact, torch.randn(8, 1, 16, 16), 1, trainer.cfg, trainer.callbacks)
    return err.value


def test_a_collapse_at_a_target_says_the_target_is_too_small_with_the_smallest_figure(tmp_path):
    probe = _collapsible(tmp_path, target=0.9).callbacks[0].controller
    fraction = 1.5 * probe.target.floor / probe.target.dense  # above the floor (so accepted), near it
    trainer = _collapsible(tmp_path, target=fraction)
    message = str(_collapse(trainer))
    floor = format_count(trainer.callbacks[0].controller.target.floor)
    assert "is too small for this model" in message and f"the smallest it shrinks to is {floor} macs" in message
    assert "gamma" not in message and "allow_collapse=true" in message


def test_a_collapse_far_above_the_target_says_lower_lr_not_gamma(tmp_path):
    trainer = _collapsible(tmp_path, target=0.5)
    message = str(_collapse(trainer, only="classifier.1.gate"))  # the hidden layer cut: 85% of the MACs left
    assert "γ is steered toward target_macs" in message and "so lower lr" in message
    assert "too small" not in message and "gamma" not in message


def test_a_collapse_without_a_target_still_says_lower_gamma(tmp_path):
    assert "Lower gamma or lr, or set allow_collapse=true" in str(_collapse(_collapsible(tmp_path)))


# -- 3. compress's epochs, in compress's terms ------------------------------------------------
def test_compress_with_one_epoch_names_the_epochs_not_freeze_epoch(tmp_path, capsys):
    args = ["compress", "--init", str(tmp_path / "w.pt"), "--target-macs", "0.5", "--out", str(tmp_path / "c")]
    assert main([*args, "--epochs", "1"]) == 2
    err = _error(capsys)
    assert "epochs must be >= 2 for compress (one selection epoch, then at least one fine-tune epoch), got 1" in err
    assert "freeze_epoch" not in err
    assert main([*args, "--epochs", "3", "--set", "freeze_epoch=3"]) == 2  # the user's own freeze_epoch: its rule
    assert "freeze_epoch must be above 0 and below epochs (3), got 3" in _error(capsys)


# -- 4. a resume with another model keeps the checkpoint --------------------------------------
def test_a_resume_with_another_model_says_which_model_the_checkpoint_is_for(tmp_path, capsys):
    cfg = TrainConfig(model="resnet20", model_kwargs={"width": 4}, epochs=1, batch_size=50, val_size=64,
                      channels_last=False, out_dir=str(tmp_path / "run"))  # fmt: skip
    Trainer(cfg, train_data=synthetic_dataset(128), log=_quiet, progress=False).fit()
    sets = ["model_kwargs.width=4", "batch_size=50", "val_size=64", "channels_last=false"]
    args = ["train", "--model", "resnet32", *[a for s in sets for a in ("--set", s)], "--epochs", "2",
            "--out", str(tmp_path / "run"), "--resume"]  # fmt: skip
    assert main(args) == 2
    err = _error(capsys)
    assert "the checkpoint was written for model resnet20, not resnet32; resume with --model resnet20 (or --set " \
           "model=resnet20), or start a new run with another --out" in err  # fmt: skip
    assert "delete" not in err and (tmp_path / "run" / "checkpoint.safetensors").is_file()


def test_a_resume_that_changes_other_fixed_keys_names_the_values_it_was_written_with(tmp_path):
    saved = {"model": "resnet20", "model_kwargs": {"width": 4}, "structures": ["block"], "lr": 0.1}
    with pytest.raises(ValueError, match=r"written for model resnet20 \(with model_kwargs=\{'width': 4\}\), not vgg"):
        resume_changes(saved, {**saved, "model": "vgg16_bn", "model_kwargs": {}}, tmp_path / "ckpt")
    with pytest.raises(ValueError) as err:
        resume_changes(saved, {**saved, "structures": ["channel"]}, tmp_path / "ckpt")
    assert "differs in ['structures']" in str(err.value) and "written with (structures=['block'])" in str(err.value)
    assert "another --out" in str(err.value) and "delete" not in str(err.value)


# -- 5. zoo widths of the wrong kind ----------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "width", "says"),
    [("resnet20", 0.5, "the stem's channel count .* e.g. width=16"),
     ("resnet56", 0, "the stem's channel count"),
     ("vgg16_bn", 64, r"scales every layer of VGG-16 .* a number in \(0, 4\], e.g. width=0.25"),
     ("googlenet", 32, "scales every layer of GoogLeNet"),
     ("vgg16_bn", -1.0, "it is not a channel count")],
)  # fmt: skip
def test_a_zoo_width_of_the_wrong_kind_says_what_width_means(name, width, says):
    with pytest.raises(ValueError, match=f"^{name} width {width!r}: width .*{says}"):
        sss.models.create(name, width=width)


def test_zoo_widths_of_the_right_kind_build():
    assert sss.models.create("resnet20", width=8).stem[0].out_channels == 8
    assert sss.models.create("resnet20", width=8.0).stem[0].out_channels == 8  # a YAML 8.0 is a count
    assert sss.models.create("vgg16_bn", width=0.25).features[0].out_channels == 16


def test_a_zoo_width_of_the_wrong_kind_on_the_cli(tmp_path, capsys):
    args = ["train", "--model", "vgg16_bn", "--set", "model_kwargs.width=64", "--out", str(tmp_path / "run"), *SMALL]
    assert main(args) == 2
    assert "vgg16_bn width 64: width scales every layer" in _error(capsys)
