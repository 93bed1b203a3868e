"""Torch-Pruning's methods, run by Torch-Pruning itself, inside the head-to-head's training loop.

Each peer is built as in Torch-Pruning's ``reproduce/main.py`` (version 1.6): global pruning,
``pruning_ratio=1.0, iterative_steps=400, max_pruning_ratio=1.0``, the classifier in
``ignored_layers``, and ``pruner.step()`` repeated until the MAC target is met (counted by
``sss.count``, the figure every method is judged by). What differs from that script, on
purpose: every method gets the same epochs (the sparse phase is inside the budget, not 100
extra epochs), and the last epoch is reported, not the best test accuracy.

- ``tp-l1``: ``MagnitudeImportance(p=1)``, one-shot;
- ``tp-groupnorm``: ``GroupMagnitudeImportance(p=2)`` + ``GroupNormPruner``, one-shot;
- ``tp-taylor``: ``GroupTaylorImportance``, the gradients of one training batch before each step;
- ``tp-slimming``: ``BNScaleImportance`` + ``BNScalePruner(reg=1e-5)``, a sparse phase first;
- ``tp-group-sl``: DepGraph's group sparse learning, Torch-Pruning's strongest in its own
  table: ``GroupMagnitudeImportance(p=2, normalizer='max')`` + ``GroupNormPruner(reg=5e-4)``,
  a sparse phase with weight decay 0;
- ``tp-vit`` (bench_vit.py): Torch-Pruning's ViT pruning as its ``examples/transformers/
  prune_timm_vit.py`` builds it: ``GroupMagnitudeImportance(p=2)``, ``num_heads`` of every
  ``qkv``, ``prune_num_heads=True``, ``prune_head_dims=False``, global, the head ratio equal to
  the channel ratio, one ``step()``; ``num_heads`` set from the pruner afterwards. It is one-shot
  at the ratio (found by bisection) that meets the MAC target, because stepping it 400 times
  does not work in Torch-Pruning 1.6.1: global head pruning fails on its first step
  (``head_thres`` unbound while no head is due yet) and local head pruning rounds every step's
  share of heads up, one head per step.

The sparse phase calls ``pruner.regularize(model)`` between ``backward()`` and ``step()``, as
Torch-Pruning's script does. The regularisation strengths are Torch-Pruning's published ones
(not retuned for a shorter phase: tuning them for our schedule would be our choice, not theirs).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

import sss
from sss.data import iterate_batches
from sss.measure import evaluate
from sss.structures.tracing import is_attention
from sss.train import Trainer


@dataclass(frozen=True)
class TPMethod:
    """One Torch-Pruning configuration: its importance, its pruner (with keywords) and whether
    it trains sparsely before the cut."""

    importance: Callable[[], tp.importance.Importance]
    pruner: type
    pruner_kwargs: dict
    sparse: bool = False
    needs_gradients: bool = False
    heads: bool = False


TP_METHODS: dict[str, TPMethod] = {
    "tp-l1": TPMethod(lambda: tp.importance.MagnitudeImportance(p=1), tp.pruner.MetaPruner, {}),
    "tp-groupnorm": TPMethod(lambda: tp.importance.GroupMagnitudeImportance(p=2), tp.pruner.GroupNormPruner, {}),
    "tp-taylor": TPMethod(
        lambda: tp.importance.GroupTaylorImportance(), tp.pruner.MetaPruner, {}, needs_gradients=True
    ),
    "tp-slimming": TPMethod(
        lambda: tp.importance.BNScaleImportance(), tp.pruner.BNScalePruner, {"reg": 1e-5}, sparse=True
    ),
    "tp-group-sl": TPMethod(
        lambda: tp.importance.GroupMagnitudeImportance(p=2, normalizer="max"),
        tp.pruner.GroupNormPruner,
        {"reg": 5e-4},
        sparse=True,
    ),
    "tp-vit": TPMethod(
        lambda: tp.importance.GroupMagnitudeImportance(p=2),
        tp.pruner.MetaPruner,
        {"prune_num_heads": True, "prune_head_dims": False},
        heads=True,
    ),
}
#: The methods of the CNN tracks (``tp-vit`` is the ViT track's).
CNN_TP_METHODS = [m for m, spec in TP_METHODS.items() if not spec.heads]


def create_pruner(method: str, model: nn.Module, example: torch.Tensor, num_classes: int, ratio: float = 1.0):
    """Torch-Pruning's pruner for ``method`` on ``model``, as its reproduce script builds it
    (a head method: as its ViT example does, one step to ``ratio`` of channels and heads)."""
    spec = TP_METHODS[method]
    ignored = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    steps = {"iterative_steps": 400, "max_pruning_ratio": 1.0}
    if spec.heads:
        heads = {m.qkv: m.num_heads for m in model.modules() if is_attention(m)}
        steps = {"iterative_steps": 1, "num_heads": heads, "head_pruning_ratio": ratio}
    return spec.pruner(model, example, importance=spec.importance(), global_pruning=True, pruning_ratio=ratio,
                       ignored_layers=ignored, **steps, **spec.pruner_kwargs)  # fmt: skip


def one_shot_cut(method: str, model: nn.Module, example: torch.Tensor, target: float, num_classes: int,
                 tries: int = 14) -> tuple[nn.Module, float]:  # fmt: skip
    """The model pruned by one ``step()`` at the smallest ratio (bisection) whose MACs are at most
    ``target`` of ``model``'s, with each attention's ``num_heads`` set as Torch-Pruning's example
    does; returns it and the fraction reached."""
    dense = sss.count(model, example)[0]

    def pruned(ratio: float) -> tuple[nn.Module, float | None]:
        m = copy.deepcopy(model).eval()
        pruner = create_pruner(method, m, example, num_classes, ratio)
        pruner.step()
        attention = [a for a in m.modules() if is_attention(a)]
        for a in attention:
            a.num_heads = pruner.num_heads[a.qkv]
            if hasattr(a, "attn_dim"):  # timm >= 1.0.20 reshapes by it (Torch-Pruning's example predates it)
                a.attn_dim = a.num_heads * a.head_dim
        if any(a.num_heads == 0 for a in attention):  # a layer lost every head: no model (too far)
            return m, None
        return m, sss.count(m, example)[0] / dense

    lo, hi, best = 0.0, 0.95, None
    for _ in range(tries):
        mid = (lo + hi) / 2
        candidate = pruned(mid)
        if candidate[1] is None or candidate[1] <= target:
            hi, best = mid, (candidate if candidate[1] is not None else best)
        else:
            lo = mid
    if best is None:
        raise RuntimeError(f"{method} reaches {target} of the MACs only by removing every head of a layer")
    return best


def progressive_cut(pruner, model: nn.Module, example: torch.Tensor, target: float,
                    gradients: Callable[[], None] | None = None) -> float:  # fmt: skip
    """``pruner.step()`` until ``model`` has at most ``target`` of its MACs (Torch-Pruning's
    ``progressive_pruning``, with ``sss.count``); ``gradients`` (Taylor) fills ``.grad`` before
    each step. Returns the fraction reached."""
    model.eval()
    dense = sss.count(model, example)[0]
    fraction = 1.0
    while fraction > target and pruner.current_step < pruner.iterative_steps:
        if gradients is not None:
            model.zero_grad()
            gradients()
        pruner.step()
        fraction = sss.count(model, example)[0] / dense
    model.zero_grad(set_to_none=True)
    return fraction


class TPTrainer(Trainer):
    """The head-to-head's run for a Torch-Pruning peer: a plain model trained ``cut_epoch``
    epochs (sparsely, for the sparse methods), cut by Torch-Pruning to the target, then trained
    for the rest with the same loop, schedule and data as every other method."""

    pruner = None
    cut_done = False
    method = "tp-l1"

    def __init__(self, cfg, *, method: str, target: float, cut_epoch: int, model: nn.Module, **kwargs) -> None:
        self.method, self.target, self.cut_epoch = method, target, cut_epoch
        super().__init__(cfg, model=model, progress=False, **kwargs)
        heads = TP_METHODS[method].heads  # one-shot at the cut, no pruner before it
        self.pruner = None if heads else create_pruner(method, self.model, self.example, self.train_data.num_classes)
        self.weights_opt, self.factors_opt = self.build_optimizers()  # weight decay 0 while regularizing
        self.at_cut: nn.Module | None = None
        self.val_acc_after_cut: float | None = None
        self.macs_fraction_at_cut: float | None = None

    @property
    def regularizing(self) -> bool:
        return self.pruner is not None and TP_METHODS[self.method].sparse and not self.cut_done

    def build_optimizers(self):
        if self.regularizing:  # Torch-Pruning's sparse phase: SGD, weight decay 0
            opt = torch.optim.SGD(self.model.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum)
            return opt, None
        return super().build_optimizers()

    def optimizer_step(self, loss: torch.Tensor) -> None:
        if not self.regularizing:
            super().optimizer_step(loss)
            return
        self.weights_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.pruner.regularize(self.model)
        self.weights_opt.step()

    def _gradient_batches(self) -> Callable[[], None]:
        gen = torch.Generator().manual_seed(self.cfg.seed)
        batches = iterate_batches(self.train_data, 64, shuffle=True, generator=gen)

        def gradients() -> None:
            nonlocal batches
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iterate_batches(self.train_data, 64, shuffle=True, generator=gen)
                x, y = next(batches)
            F.cross_entropy(self.model(x), y).backward()

        return gradients

    def on_epoch_start(self) -> None:
        if self.cut_done or self.epoch != self.cut_epoch:
            return
        grads = self._gradient_batches() if TP_METHODS[self.method].needs_gradients else None
        self.model = self.model.to(memory_format=torch.contiguous_format)
        if TP_METHODS[self.method].heads:
            self.model, self.macs_fraction_at_cut = one_shot_cut(self.method, self.model, self.example, self.target,
                                                                 self.train_data.num_classes)  # fmt: skip
            self.model.train()
        else:
            self.macs_fraction_at_cut = progressive_cut(self.pruner, self.model, self.example, self.target, grads)
        self.cut_done, self.pruner = True, None
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weights_opt, self.factors_opt = self.build_optimizers()
        self._set_lr()
        self._wrap()
        self.at_cut = copy.deepcopy(self.model).to(memory_format=torch.contiguous_format).eval()
        self.val_acc_after_cut = evaluate(self.at_cut, self.val_data)[0]
        self.log(f"{self.method}: cut to {self.macs_fraction_at_cut:.1%} of the dense MACs, "
                 f"validation accuracy {self.val_acc_after_cut:.2f}%")  # fmt: skip
