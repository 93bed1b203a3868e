"""GAL training: a frozen teacher, a masked student (the generator) and a discriminator."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import SGD

from sss.data import ArrayDataset
from sss.gal.discriminator import Discriminator
from sss.models import create
from sss.optim import FISTA, factor_param_groups, weight_param_groups
from sss.serialization.model_io import is_saved_model, load
from sss.serialization.weights import load_weights
from sss.structures import attach, gates
from sss.train.checks import load_optimizer_state
from sss.train.config import NonNegativeFloat, PositiveFloat, PositiveInt, TrainConfig
from sss.train.distill import check_teacher
from sss.train.engine import Trainer
from sss.train.results import BatchResult, TrainResult
from sss.viz import plot_metrics


@dataclass
class GALConfig(TrainConfig):
    """A GAL run. Inherited fields mean what they mean for ``sss train``; ``gamma`` is GAL's λ
    (the masks' L1 strength, applied in FISTA's prox), and ``lr`` drives weights and masks.

    Attributes:
        teacher: The frozen baseline whose logits are the "real" samples and whose weights
            initialise the student: a model saved by sss (e.g. ``runs/dense/model``), or trained
            weights (``.safetensors``, ``.pt``/``.pth`` state dict) for ``model`` (a zoo name or
            ``pkg.module:factory``; ``init_prefix`` strips a key prefix).
        mu: Weight μ of the MSE between teacher and student logits.
        d_lr: Discriminator learning rate (same schedule as ``lr``).
        mask_interval: FISTA updates the masks every this many steps (official code: 200).
        restart: FISTA's adaptive restart.
        official: Reproduce the official code's quirks for parity runs (docs/design.md, "GAL"):
            a linear discriminator with a double sigmoid, the L1 term applied twice (as a
            subgradient in the loss and in the prox), masks drawn from N(0, 1) (seeded here)
            and the teacher in train mode (batch statistics). Off by default.
    """

    teacher: str = ""
    mu: NonNegativeFloat = 1.0
    d_lr: PositiveFloat = 0.01
    mask_interval: PositiveInt = 1
    restart: bool = False
    official: bool = False
    lr: PositiveFloat = 0.01
    weight_decay: NonNegativeFloat = 2e-4
    gamma: NonNegativeFloat | dict[str, NonNegativeFloat] = 0.6

    def cross_field_problems(self) -> list[str]:
        problems = super().cross_field_problems()
        if not self.teacher:
            problems.append(
                "GAL needs a teacher: a model saved by sss (e.g. --teacher runs/dense/model), or a "
                "state dict with --model"
            )
        return problems


def load_teacher(cfg: GALConfig, data: ArrayDataset) -> nn.Module:
    """GAL's baseline: the model saved by sss at ``cfg.teacher``, or ``cfg.model`` built for
    ``data`` with the trained weights of ``cfg.teacher`` loaded into it. It runs once on an
    input of ``data``'s shape here: the student is its copy, so a teacher that refuses the
    images or has other classes than ``data`` is a ``ValueError`` naming both shapes, before
    training (:func:`~sss.train.distill.check_teacher`)."""
    if is_saved_model(cfg.teacher):
        model = load(cfg.teacher, trust_code=cfg.trusted_code)
    else:
        model = create(cfg.model, num_classes=data.num_classes, in_channels=data.shape[0], **cfg.model_kwargs)
        load_weights(model, cfg.teacher, cfg.init_prefix)
    check_teacher(model, torch.zeros(1, *data.shape), (1, data.num_classes), f"teacher {cfg.teacher}",
                  needs=f"the training data's {data.num_classes} classes [1, {data.num_classes}]")  # fmt: skip
    return model


class GALTrainer(Trainer):
    """Trains a masked copy of a teacher to fool a discriminator and match the teacher's logits.

    Per batch: one discriminator step on ``BCE(D(t), 1) + BCE(D(s), 0) + BCE(D(s), 1)`` (the
    last term is the paper's regulariser R(W_D), which keeps D from overpowering the
    student); then one student step on ``μ·MSE(s, t) + BCE(D(s), 1)``, SGD for the weights
    and FISTA for the masks, whose L1 term lives only in the prox. Labels are never read:
    the per-epoch "train" accuracy is the student's agreement with the teacher, ``d_acc_real``
    the share of teacher logits D calls real and ``d_acc_fake`` the share of student logits it
    calls fake (curves in ``gal_curves.png`` at the end of a run). It uses only the hooks of
    :class:`~sss.train.Trainer`: the loop, NaN guard, checkpoints and resume are the same code
    as for SSS. Masks start
    at 1, so the student starts as the teacher (the official code draws them from an
    unseeded N(0, 1)). The teacher runs in eval mode under ``no_grad``.
    """

    cfg: GALConfig

    def __init__(
        self,
        cfg: GALConfig,
        *,
        train_data: ArrayDataset | None = None,
        log: Callable[[str], None] = print,
        progress: bool = True,
    ) -> None:
        super().__init__(cfg, train_data=train_data, log=log, progress=progress)  # loads the teacher
        self.teacher = self.teacher.to(self.runtime.device)
        if self.channels_last:
            self.teacher = self.teacher.to(memory_format=torch.channels_last)
        num_logits = self.teacher(self.example.to(self.runtime.device)).shape[-1]
        self.discriminator = Discriminator(num_logits, official=cfg.official).to(self.runtime.device)
        self.d_net = self.runtime.wrap(self.discriminator)  # under DDP, D's gradients are averaged too
        self.d_opt = SGD(self.discriminator.parameters(), lr=cfg.d_lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay)  # fmt: skip

    progress_label = "GAL epoch"

    def build_model(self, data: ArrayDataset) -> nn.Module:
        self.teacher = load_teacher(self.cfg, data).eval().requires_grad_(False)
        student = copy.deepcopy(self.teacher).requires_grad_(True)  # the teacher's copy was frozen
        student = attach(student, self.example, structures=self.cfg.structures, inplace=True).train()
        if self.cfg.official:  # masks ~ N(0, 1), as the official code (which sets no seed)
            gen = torch.Generator().manual_seed(self.cfg.seed)
            with torch.no_grad():
                for ref in gates(student):
                    ref.weight.copy_(torch.randn(ref.weight.shape, generator=gen))
        return student

    def build_optimizers(self):
        cfg = self.cfg
        weights = SGD(weight_param_groups(self.model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
        masks = factor_param_groups(self.model, cfg.gamma, self.gamma_weights())
        if not masks:
            return weights, None
        return weights, FISTA(masks, lr=cfg.lr, gamma=0.0, interval=cfg.mask_interval, restart=cfg.restart)

    def on_epoch_start(self) -> None:
        for group in self.d_opt.param_groups:
            group["lr"] = self.cfg.d_lr * self.cfg.lr_factor(self.epoch)
        self.teacher.train(self.cfg.official)  # the official code never calls teacher.eval()
        self.discriminator.train()

    def extra_state(self) -> dict:
        return {"discriminator": self.discriminator.state_dict(), "d_opt": self.d_opt.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        load_optimizer_state(self.d_opt, state["d_opt"])

    def on_finish(self, result: TrainResult) -> None:
        plot_metrics(
            self.history,
            [("train_loss", "d_loss"), ("d_acc_real", "d_acc_fake"), ("train_acc", "val_acc")],
            self.out / "gal_curves.png",
            title="GAL: student (generator) and discriminator losses; D accuracy; agreement / val accuracy",
        )

    def _l1(self) -> torch.Tensor:
        """``Σ γ·‖m‖₁`` with each mask group's γ as the prox uses it (a budget steers it): the
        official code's extra L1 term in the student loss."""
        groups = self.factors_opt.param_groups if self.factors_opt is not None else []
        return sum((g["gamma"] * p.abs().sum() for g in groups for p in g["params"]),
                   torch.zeros((), device=self.runtime.device))  # fmt: skip

    def batch_loss(self, x: torch.Tensor, y: torch.Tensor) -> BatchResult:
        """One discriminator step, then the student's loss; ``y`` (the labels) is never read."""
        cfg, disc, n = self.cfg, self.discriminator, len(x)
        with torch.no_grad():
            real = self.teacher(x).float()
        fake = self.net(x).float()
        ones, zeros = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)
        bce = F.binary_cross_entropy_with_logits
        # Discriminator step, on the student's logits detached from the student: one forward
        # of both (D has no batch statistics), in fp32 (D is tiny), outside the autocast.
        with torch.autocast(x.device.type, enabled=False):
            disc.requires_grad_(True)
            d_real, d_fake = self.d_net(torch.cat([real, fake.detach()])).split(n)
            loss_d = bce(d_real, ones) + bce(d_fake, zeros) + bce(d_fake, ones)
            self.d_opt.zero_grad(set_to_none=True)
            loss_d.backward()
            self.d_opt.step()
            # Student loss: match the teacher and fool the (now fixed) discriminator.
            disc.requires_grad_(False)
            loss_g = cfg.mu * F.mse_loss(fake, real) + bce(disc(fake), ones)
        if cfg.official:
            loss_g = loss_g + self._l1()
        figures = {"d_loss": loss_d.item(), "d_acc_real": float((d_real > 0).float().mean()),
                   "d_acc_fake": float((d_fake < 0).float().mean())}  # fmt: skip
        return BatchResult(loss_g, fake, real.argmax(1), figures)
