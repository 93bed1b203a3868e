"""The methods of the head-to-head (bench_peers.py): one function per method, one schedule for all.

Every method gets the same model (ResNet-20), data split, seed and number of epochs
(``PEER_CONFIG``), and except GAL the same shape of run: one selection epoch, a cut to the MAC target,
then the compact model rewound to its initial weights and trained for the other epochs. Only
the selection differs:

- ``sss`` / ``sss-blocks`` / ``sss-channels``: APG on block + channel, block or channel
  factors, γ steered to the target (the demo's recipe and starting strengths);
- ``slimming`` (Liu et al. 2017): sparsity training with an L1 subgradient of 1e-4 on every BN
  γ, then the channels with the smallest |γ| (mean over the BNs a coupled channel has) cut
  globally until the target is met (Torch-Pruning's ``BNScalePruner`` criterion);
- ``l1`` (Li et al. 2017): dense training, then the filters with the smallest L1 norm (summed
  over a coupled channel's convs, normalised by its layer's mean, as Torch-Pruning's
  ``MagnitudeImportance(p=1)`` with a mean normaliser) cut globally until the target is met;
- ``gal``: its teacher (a dense model) trains first and its epochs count: the teacher half
  of the epochs, one GAL epoch (block + channel masks, FISTA, steered to the target,
  no labels), then fine-tuning for the rest, the GAL paper's recipe.

The peers' criteria are computed on sss's channel groups, so that the cut, the rewind and the
training are the same code for every method (Torch-Pruning's pruners apply the same criteria,
but their prune loop cannot rewind).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

import torch
from torch import nn

import sss
from sss.cli.demo import DEMO_CONFIG
from sss.data import ArrayDataset
from sss.gal import GALConfig, GALTrainer
from sss.structures.gate import ChannelGated
from sss.train import TrainConfig, Trainer
from sss.train.callbacks import Callback

#: The benchmark's schedule: the demo's recipe on a smaller split (10k images to train, 2k held
#: out) and 6 epochs: one run takes 1-4 minutes on a 2-core CPU (the full grid, 54 runs, about 2 hours);
#: ``rewind`` (not the demo's ``retrain``) so that every method trains exactly 6 epochs.
PEER_CONFIG = dataclasses.replace(DEMO_CONFIG, train_subset=12_000, val_size=2_000, epochs=6, after_freeze="rewind")
#: The smoke version (tests/test_bench_peers.py): a narrow net, 2k images, 3 epochs.
QUICK_PEER_CONFIG = dataclasses.replace(PEER_CONFIG, model_kwargs={"width": 8}, train_subset=2_500, val_size=500,
                                        epochs=3, batch_size=64)  # fmt: skip
SLIM_REG = 1e-4
SSS_STRUCTURES = {"sss": ["block", "channel"], "sss-blocks": ["block"], "sss-channels": ["channel"]}
METHODS = [*SSS_STRUCTURES, "slimming", "l1", "gal"]


class PeerTrainer(Trainer):
    """The benchmark's run with a peer's selection: λ stays 1 (no factor optimizer) until the cut."""

    criterion = "l1"

    def build_optimizers(self):
        return super().build_optimizers()[0], None

    def optimizer_step(self, loss: torch.Tensor) -> None:
        self.weights_opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.criterion == "slimming" and not self.frozen:  # Liu et al.'s sparsity term on BN γ
            for m in self.model.modules():
                if isinstance(m, nn.BatchNorm2d) and m.weight.grad is not None:
                    m.weight.grad.add_(torch.sign(m.weight.detach()), alpha=SLIM_REG)
        self.weights_opt.step()

    def __init__(self, cfg, **kwargs) -> None:
        super().__init__(cfg, callbacks=[PeerCut(self.criterion)], **kwargs)


class PeerCut(Callback):
    """The peer's one-shot cut where the selection ends: its criterion's lowest channels go."""

    name = "peer_cut"

    def __init__(self, criterion: str) -> None:
        self.criterion = criterion

    def on_selection_end(self, trainer) -> None:
        cut = cut_to_target(trainer.model, trainer.example, trainer.cfg.target_macs,
                            scores(trainer.model, self.criterion))  # fmt: skip
        trainer.log(f"{self.criterion}: cut to {cut:.1%} of the dense MACs")


@torch.no_grad()
def scores(model: nn.Module, criterion: str) -> dict[str, torch.Tensor]:
    """Per channel of each channel gate: mean BN |γ| (slimming) or normalised filter L1 (l1)."""
    out = {}
    for name, wrapper in model.named_modules():
        if not isinstance(wrapper, ChannelGated) or wrapper.group is None:
            continue
        group, per_channel = wrapper.group, []
        for c in range(group.channels):
            values = []
            for s in group.slices:
                layer = model.get_submodule(s.path)
                layer = layer.inner if isinstance(layer, ChannelGated) else layer
                if s.role != "out":
                    continue
                if criterion == "slimming" and isinstance(layer, nn.BatchNorm2d):
                    values.append(float(layer.weight[list(s.index[c])].abs().mean()))
                elif criterion == "l1" and isinstance(layer, nn.Conv2d):
                    values.append(float(layer.weight[list(s.index[c])].abs().sum()))
            per_channel.append(sum(values) / max(1, len(values)) if criterion == "slimming" else sum(values))
        score = torch.tensor(per_channel)
        out[f"{name}.gate"] = score / score.mean() if criterion == "l1" else score
    return out


@torch.no_grad()
def cut_to_target(model: nn.Module, example: torch.Tensor, target: float, score: dict[str, torch.Tensor]) -> float:
    """Zeroes the lowest-scored channels globally (each gate keeps one) until the exact MACs of
    the pruned model are at most ``target`` of dense; returns the fraction reached."""
    refs = {r.name: r for r in sss.gates(model) if r.name in score}
    dense = sss.count(model, example)[0]
    order = sorted((float(v), name, i) for name, s in score.items() for i, v in enumerate(s.tolist()))
    kept = {name: r.weight.numel() for name, r in refs.items()}
    eligible = []
    for _, name, i in order:
        if kept[name] > 1:
            kept[name] -= 1
            eligible.append((name, i))

    def apply(k: int) -> float:
        for r in refs.values():
            r.weight.fill_(1.0)
        for name, i in eligible[:k]:
            refs[name].weight.view(-1)[i] = 0.0
        return sss.count(sss.prune(model), example)[0] / dense

    lo, hi = 0, len(eligible)
    while lo < hi:  # the fewest cut channels that meet the target
        mid = (lo + hi) // 2
        if apply(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return apply(lo)


def train_dense(cfg: TrainConfig, seed: int, folder: Path, train: ArrayDataset, epochs: int | None = None) -> nn.Module:
    """The dense model of a seed on the benchmark's split (no factors, no freeze)."""
    cfg = dataclasses.replace(cfg, seed=seed, sparsity="none", freeze_epoch=None, target_macs=None,
                              epochs=epochs or cfg.epochs, out_dir=str(folder))  # fmt: skip
    return Trainer(cfg, train_data=train, progress=False).fit(overwrite=True).compact


def _gal(cfg: TrainConfig, target: float, seed: int, folder: Path, train: ArrayDataset) -> tuple[nn.Module, nn.Module]:
    teacher_dir = folder.parent / f"gal-teacher_s{seed}"  # shared by the targets; its time counts in each
    if not (teacher_dir / "model.json").exists():
        train_dense(cfg, seed, teacher_dir, train, epochs=gal_teacher_epochs(cfg))
    gal_cfg = GALConfig(model=cfg.model, model_kwargs=cfg.model_kwargs, teacher=str(teacher_dir / "model"),
                        structures=["block", "channel"], gamma={"block": 1.0, "channel": 0.05}, target_macs=target,
                        epochs=1, lr=0.01, seed=seed, train_subset=cfg.train_subset, val_size=cfg.val_size,
                        batch_size=cfg.batch_size, out_dir=str(folder / "gal"))  # fmt: skip
    gal = GALTrainer(gal_cfg, train_data=train, progress=False).fit(overwrite=True)
    tune_cfg = dataclasses.replace(cfg, seed=seed, sparsity="none", freeze_epoch=None, target_macs=None,
                                   epochs=cfg.epochs - gal_teacher_epochs(cfg) - 1, lr=0.05,
                                   out_dir=str(folder / "finetune"))  # fmt: skip
    student = copy.deepcopy(gal.compact).train()
    tuned = Trainer(tune_cfg, train_data=train, model=student, progress=False).fit(overwrite=True).model
    return gal.model, tuned


def gal_teacher_epochs(cfg: TrainConfig) -> int:
    """GAL's teacher gets half of the epochs; one GAL epoch and fine-tuning share the rest."""
    return cfg.epochs // 2


def run_method(
    cfg: TrainConfig, method: str, target: float, seed: int, folder: Path, train: ArrayDataset
) -> tuple[nn.Module, nn.Module]:
    """Runs one method; returns (the gated model at the cut, the final compact model)."""
    base = dataclasses.replace(cfg, seed=seed, target_macs=target, out_dir=str(folder))
    if method in SSS_STRUCTURES:
        kinds = SSS_STRUCTURES[method]
        gamma = {k: v for k, v in DEMO_CONFIG.gamma.items() if k in kinds}
        result = Trainer(dataclasses.replace(base, structures=kinds, gamma=gamma), train_data=train,
                         progress=False).fit(overwrite=True)  # fmt: skip
        return result.selected, result.compact
    if method == "gal":
        return _gal(cfg, target, seed, folder, train)
    cfg = dataclasses.replace(base, structures=["channel"], gamma=0.0)
    trainer = type("Peer", (PeerTrainer,), {"criterion": method})(cfg, train_data=train, progress=False)
    result = trainer.fit(overwrite=True)
    return result.selected, result.compact


def timed_run(
    cfg: TrainConfig, method: str, target: float, seed: int, folder: Path, train: ArrayDataset, test: ArrayDataset
) -> dict:
    """One run's figures (no latency: that is timed later, all models together) and its compact model
    saved as ``folder/compact``; a GAL run's wall time includes its teacher's."""
    start = time.perf_counter()
    selected, compact = run_method(cfg, method, target, seed, folder, train)
    seconds = time.perf_counter() - start
    if method == "gal":
        seconds += float(sum(r["seconds"] for r in _metrics(folder.parent / f"gal-teacher_s{seed}")))
    sss.save(compact, folder / "compact")
    macs, params = sss.count(compact, torch.zeros(1, *test.shape))
    return {"method": method, "target": target, "seed": seed, "accuracy": sss.evaluate(compact, test)[0],
            "accuracy_after_cut": sss.evaluate(sss.prune(selected), test)[0], "macs": macs, "params": params,
            "blocks_removed": len(sss.structures.removed_blocks(compact)), "seconds": seconds}  # fmt: skip


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
