"""GAL: label-free training, a frozen teacher, masks driven to exact zeros, exact removal."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import sss
from conftest import synthetic_dataset
from sss.gal import Discriminator, GALConfig, GALTrainer
from sss.train import TrainConfig, Trainer, load_config


def _quiet(msg):
    pass


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    cfg = TrainConfig(model="resnet20", model_kwargs={"width": 4}, sparsity="none", val_size=64, epochs=2,
                      batch_size=32, lr=0.05, out_dir=str(out), channels_last=False)  # fmt: skip
    Trainer(cfg, train_data=synthetic_dataset(256), log=_quiet, progress=False).fit()
    return out / "model"


def _gal_cfg(teacher, tmp_path, **kw):
    base = GALConfig(teacher=str(teacher), model="resnet20", val_size=64, epochs=2, batch_size=32, lr=0.05,
                     gamma=2.0, out_dir=str(tmp_path / "gal"), channels_last=False, structures=["block"])  # fmt: skip
    return dataclasses.replace(base, **kw)


def test_discriminator_is_nonlinear_with_one_logit():
    disc = Discriminator(10)
    assert disc(torch.randn(5, 10)).shape == (5,)
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in disc.modules())


def test_labels_never_enter_the_gal_loss(teacher, tmp_path):
    data = synthetic_dataset(256)
    shuffled = dataclasses.replace(data, labels=np.random.default_rng(5).permutation(data.labels))
    runs = []
    for name, d in (("a", data), ("b", shuffled)):
        cfg = _gal_cfg(teacher, tmp_path / name)
        runs.append(GALTrainer(cfg, train_data=d, log=_quiet, progress=False).fit())
    a, b = runs[0].model.state_dict(), runs[1].model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gal_prunes_exactly_and_leaves_the_teacher_alone(teacher, tmp_path):
    before = {k: v.clone() for k, v in sss.load(teacher).state_dict().items()}
    lines = []
    trainer = GALTrainer(_gal_cfg(teacher, tmp_path), train_data=synthetic_dataset(256), log=lines.append,
                         progress=False)  # fmt: skip
    result = trainer.fit()
    after = trainer.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen, eval-mode BN: untouched
    assert not trainer.teacher.training
    zeros = sum(g.num_zero for g in sss.gates(result.model))
    assert zeros >= 1
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(result.model.eval()(x), result.compact(x), atol=1e-5)
    assert "d_loss" in lines[-1] and "d_acc_real" in lines[-1]
    assert (tmp_path / "gal" / "gal_curves.png").stat().st_size > 10_000


def test_gal_resume_restores_the_discriminator(teacher, tmp_path):
    data = synthetic_dataset(128)
    GALTrainer(_gal_cfg(teacher, tmp_path, epochs=1), train_data=data, log=_quiet, progress=False).fit()
    resumed = GALTrainer(_gal_cfg(teacher, tmp_path, epochs=2), train_data=data, log=_quiet, progress=False)
    resumed.load(tmp_path / "gal" / "checkpoint.safetensors")
    saved = sss.serialization.load_state(tmp_path / "gal" / "checkpoint.safetensors")["extra"]["discriminator"]
    assert all(torch.equal(saved[k], v) for k, v in resumed.discriminator.state_dict().items())


def test_gal_needs_a_teacher():
    with pytest.raises(ValueError, match="teacher"):
        GALConfig().validate()


def test_student_weights_train(teacher, tmp_path):
    trainer = GALTrainer(_gal_cfg(teacher, tmp_path, epochs=1, gamma=0.0), train_data=synthetic_dataset(128),
                         log=_quiet, progress=False)  # fmt: skip
    start = trainer.model.stem[0].weight.detach().clone()
    trainer.fit()
    assert not torch.equal(trainer.model.stem[0].weight, start)
    assert all(p.requires_grad for p in trainer.model.parameters())


def test_official_switch_reproduces_the_quirks(teacher, tmp_path):
    disc = Discriminator(10, official=True)
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in disc.modules())
    assert 0 < float(disc(torch.randn(4, 10)).min()) < 1  # a probability, fed to a with-logits loss
    before = {k: v.clone() for k, v in sss.load(teacher).state_dict().items()}
    trainer = GALTrainer(_gal_cfg(teacher, tmp_path, official=True, epochs=1), train_data=synthetic_dataset(128),
                         log=_quiet, progress=False)  # fmt: skip
    masks = torch.cat([g.weight.detach().clone() for g in sss.gates(trainer.model)])
    assert bool((masks < 0).any()) and not bool((masks == 1).all())  # N(0, 1), not ones
    trainer.fit()
    after = trainer.teacher.state_dict()
    assert not all(torch.equal(before[k], after[k]) for k in before if "running_mean" in k)  # train-mode teacher


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "configs" / "gal").glob("*.yaml")))
def test_shipped_gal_configs_are_valid(path):
    cfg = load_config(path, cls=GALConfig)
    assert cfg.model in sss.models.list_models() and cfg.teacher
    assert cfg.epochs == (30 if cfg.dataset == "imagefolder" else 100)  # ImageNet: our stated choice


def test_gal_with_branch_masks_on_googlenet(tmp_path):
    out = tmp_path / "teacher"
    cfg = TrainConfig(model="googlenet", model_kwargs={"width": 0.0625}, sparsity="none", val_size=32, epochs=1,
                      batch_size=32, lr=0.05, out_dir=str(out), channels_last=False)  # fmt: skip
    Trainer(cfg, train_data=synthetic_dataset(128), log=_quiet, progress=False).fit()
    gal_cfg = _gal_cfg(
        out / "model", tmp_path, model="googlenet", structures=["branch"], gamma=20.0, epochs=1, allow_collapse=True
    )  # γ = 20 zeroes whole Inception modules
    result = GALTrainer(gal_cfg, train_data=synthetic_dataset(128), log=_quiet, progress=False).fit()
    assert {g.kind for g in sss.gates(result.model)} == {"branch"}
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(result.model.eval()(x), result.compact(x), atol=1e-5)


def test_gal_on_a_vision_transformer_removes_heads_neurons_and_branches_exactly(tmp_path):
    """GAL's masks on a ViT: heads, MLP neurons and both residual branches of each block; the
    compact model is the masked one, with fewer heads or neurons."""
    out, kwargs = tmp_path / "teacher", {"img_size": 12, "embed_dim": 32, "depth": 2}
    cfg = TrainConfig(model="vit_fmnist", model_kwargs=kwargs, sparsity="none", val_size=32, epochs=1, batch_size=32,
                      lr=0.03, out_dir=str(out), channels_last=False)  # fmt: skip
    Trainer(cfg, train_data=synthetic_dataset(128), log=_quiet, progress=False).fit()
    gal_cfg = _gal_cfg(out / "model", tmp_path, model="vit_fmnist", model_kwargs=kwargs, lr=0.03, epochs=1,
                       structures=["block", "head", "channel"], gamma=20.0, allow_collapse=True)  # fmt: skip
    result = GALTrainer(gal_cfg, train_data=synthetic_dataset(128), log=_quiet, progress=False).fit()
    assert {g.kind for g in sss.gates(result.model)} == {"block", "head", "channel"}
    assert sum(g.num_zero for g in sss.gates(result.model)) >= 1
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(result.model.eval()(x), result.compact(x), atol=1e-5)
    assert sss.count(result.compact, x[:1])[0] < sss.count(sss.load(out / "model"), x[:1])[0]
