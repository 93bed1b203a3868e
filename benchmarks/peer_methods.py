"""The methods of the head-to-head (bench_peers.py from scratch, bench_pretrained.py from a
trained model, bench_vit.py from a trained ViT): one schedule per track, one function that runs
any method on it.

Every method of a track gets the same model (ResNet-20; the ViT track ``vit_fmnist``), data
split, seed, epochs and training loop (sss's ``Trainer``); only what is removed, and how it is
chosen, differs. A run is: ``cut_epoch`` epochs before the cut (dense training for a one-shot
criterion, sparse training for SSS, slimming and group sparse learning), the cut to the MAC
target, then the compact model trained for the remaining epochs with the same schedule
(``after_freeze: continue``; sss from scratch retrains instead, see below).

- ``sss`` / ``sss-blocks`` / ``sss-channels`` (+``kd``): APG on block + channel, block or channel
  factors, γ steered to the target; from scratch, the demo's shape (one selection epoch, then the
  compact model retrained from its initial weights for the other epochs, ``after_freeze:
  retrain``); from a trained model, the trained-model recipe (magnitude-initialised factors,
  distance steering) and distillation from it with ``+kd``; on a ViT, heads + neurons + branches;
- ``tp-*``: Torch-Pruning's pruners run by Torch-Pruning (tp_peers.py); one-shot criteria cut
  at epoch 0 from a trained model (the trained model is their pre-training), sparse ones after
  their sparse phase; ``tp-l1+kd`` / ``tp-taylor+kd`` get sss's distillation from the trained
  model, so that ``+kd`` rows compare criteria, not whether a teacher was used;
- ``uniform`` / ``random``: the controls of Liu et al. (ICLR 2019): every layer's width scaled
  by the same factor, or random per-layer widths, to the same MACs, random channels kept (from a
  trained model: its weights, then fine-tuned; from scratch: trained from initialisation);
- ``gal``: from a trained model, one GAL epoch with it as the teacher (no labels), then the
  compact model fine-tuned; from scratch, a teacher trained half of the epochs first (its
  epochs count), one GAL epoch, fine-tuning for the rest.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import sss
import timm_vit
from h2h_report import CONTROLS, is_sss
from sss.data import ArrayDataset
from sss.gal import GALConfig, GALTrainer
from sss.models import create
from sss.recipes.demo import DEMO_CONFIG
from sss.train import TrainConfig, Trainer
from tp_peers import CNN_TP_METHODS, TP_METHODS, TPTrainer

#: From scratch: 10k images to train, 2k held out, 6 epochs, the cut after 2.
SCRATCH = dataclasses.replace(DEMO_CONFIG, train_subset=12_000, val_size=2_000, epochs=6, freeze_epoch=2,
                              after_freeze="continue")  # fmt: skip
#: From a trained model: the same split, 3 epochs at a fine-tuning rate, the selection in the first.
TRAINED = dataclasses.replace(SCRATCH, epochs=3, freeze_epoch=1, lr=0.01, gamma=0.01)
#: The smoke versions (tests/test_bench_peers.py): a narrow net, 1.2k images.
QUICK = {"scratch": dataclasses.replace(SCRATCH, model_kwargs={"width": 8}, train_subset=1_200, val_size=300,
                                        epochs=3, freeze_epoch=1, batch_size=64),
         "trained": dataclasses.replace(TRAINED, model_kwargs={"width": 8}, train_subset=1_200, val_size=300,
                                        epochs=2, batch_size=64)}  # fmt: skip
#: The ViT track (bench_vit.py): ``vit_fmnist`` from a trained one, the trained track's schedule,
#: factors from 1 (from magnitudes the selection kept 3-7 of 128 MLP neurons per block: 64.7%
#: against 70.1% at 0.5, seed 0; docs/design.md, "Vision transformers").
VIT = dataclasses.replace(TRAINED, model="vit_fmnist", channels_last=False, factor_init="one")
QUICK["vit"] = dataclasses.replace(QUICK["trained"], model="vit_fmnist", model_kwargs={"embed_dim": 32, "depth": 2},
                                   channels_last=False)  # fmt: skip
#: The real timm ViT track (bench_vit_timm.py): timm's ViT-Tiny on 28×28 (timm_vit.py), the ViT schedule.
VIT_TIMM = dataclasses.replace(VIT, model=timm_vit.MODEL)
QUICK["vit-timm"] = dataclasses.replace(QUICK["vit"], model=timm_vit.MODEL, model_kwargs={})
SCHEDULES = {"scratch": SCRATCH, "trained": TRAINED, "vit": VIT, "vit-timm": VIT_TIMM}
#: A trained-model track's dense model: ``build(folder, train, quick)`` trains it into ``folder/model``.
DenseBuilder = Callable[[Path, ArrayDataset, bool], object]


def _by_trainer(track: str, recipe: TrainConfig) -> DenseBuilder:
    """Trained by sss's Trainer with ``recipe`` (with ``quick``: the track's smoke schedule, 2 epochs)."""

    def build(folder: Path, train: ArrayDataset, quick: bool) -> nn.Module:
        cfg = QUICK[track] if quick else recipe
        return train_dense(cfg, 0, folder, train, epochs=2 if quick else cfg.epochs)

    return build


def _by_adamw(folder: Path, train: ArrayDataset, quick: bool) -> Path:
    """Trained as a ViT usually is (AdamW, warm-up, label smoothing: timm_vit.train_adamw)."""
    return timm_vit.train_adamw(folder, train, epochs=1 if quick else 10, train_size=1_200 if quick else 25_000)


#: The tracks that start from a trained model (shared by their seeds), and how it is trained: the
#: demo's recipe; the ViT at lr 0.03 (SGD at 0.1 trains it slower: in a plain loop 51% against 70%
#: after 2 epochs); timm's ViT with AdamW.
DENSE: dict[str, DenseBuilder] = {
    "trained": _by_trainer("trained", DEMO_CONFIG),
    "vit": _by_trainer("vit", dataclasses.replace(DEMO_CONFIG, model="vit_fmnist", channels_last=False, lr=0.03)),
    "vit-timm": _by_adamw,
}
FROM_TRAINED = tuple(DENSE)
SSS_STRUCTURES = {"sss": ["block", "channel"], "sss-blocks": ["block"], "sss-channels": ["channel"]}
#: On a ViT, ``sss`` gates heads, MLP neurons and both residual branches of every block;
#: ``sss-wide`` the embedding width too, every kind on one price per MAC (``gamma_price: macs``);
#: ``sss-rank`` all four kinds with factors from their importance per MAC (``factor_init: importance``);
#: ``sss-scaled`` the same with the stream given back its scale at the cut (``rescale_streams``, the
#: default; ``sss-rank`` keeps it off, as its rows were measured); ``sss-kept`` the default config with each
#: layer gate's stronger half held level with its strongest (``keep_fraction: 0.5``, chosen on seed 1's
#: validation split at 0.3 of the MACs over 0, 0.25 and 0.5: docs/experiments/vision-transformers.md);
#: ``sss-kept-short`` the same with a selection of 4 steps (``freeze_epoch: 0.05``; chosen there too,
#: over 1, 0.5, 0.25, 0.1 and 0.05), so the compact model gets nearly all of the fine-tune.
_ALL_VIT_KINDS = ["block", "head", "channel", "embedding"]
VIT_VARIANTS = {"sss": {"structures": ["block", "head", "channel"]},
                "sss-wide": {"structures": _ALL_VIT_KINDS, "gamma_price": "macs", "rescale_streams": False},
                "sss-rank": {"structures": _ALL_VIT_KINDS, "factor_init": "importance", "rescale_streams": False},
                "sss-scaled": {"structures": _ALL_VIT_KINDS, "factor_init": "importance"},
                "sss-kept": {"structures": _ALL_VIT_KINDS, "factor_init": "importance", "keep_fraction": 0.5},
                "sss-kept-short": {"structures": _ALL_VIT_KINDS, "factor_init": "importance", "keep_fraction": 0.5,
                                   "freeze_epoch": 0.05}}  # fmt: skip
#: The config fields every method sets itself (``--set`` may not: the method would override it).
METHOD_FIELDS = frozenset({"structures", "gamma", "init", "distill", "distill_teacher", "sparsity", "target_macs",
                           "seed", "out_dir", "epochs", "after_freeze"})  # fmt: skip


def fields_set_by(methods: list[str], track: str) -> frozenset[str]:
    """The config fields ``methods`` set themselves on ``track``: :data:`METHOD_FIELDS`, their ViT
    variants' own, and ``freeze_epoch`` unless every method is sss from a trained model (the
    only runs that take the schedule's: from scratch sss sets it, the others cut elsewhere)."""
    own = {k for m in methods for k in VIT_VARIANTS.get(m.removesuffix("+kd"), {})}
    takes_freeze = track in FROM_TRAINED and all(is_sss(m) for m in methods)
    return METHOD_FIELDS | own | (set() if takes_freeze else {"freeze_epoch"})


METHODS = {
    "scratch": [*SSS_STRUCTURES, *CNN_TP_METHODS, *CONTROLS],
    "trained": [
        "sss",
        "sss-blocks",
        "sss-channels",
        "sss+kd",
        "sss-blocks+kd",
        "sss-channels+kd",
        *CNN_TP_METHODS,
        "tp-l1+kd",
        "tp-taylor+kd",
        *CONTROLS,
        "gal",
    ],
    "vit": ["sss", "sss+kd", "sss-wide", "sss-wide+kd", "sss-rank", "sss-rank+kd", "tp-vit", "tp-vit+kd"],
    "vit-timm": [
        "sss-rank",
        "sss-scaled",
        "sss-kept",
        "sss-kept-short",
        "tp-vit",
        "uniform",
        "sss-rank+kd",
        "sss-scaled+kd",
        "sss-kept+kd",
        "sss-kept-short+kd",
        "tp-vit+kd",
    ],
}
#: The ViT tracks (their sss variants are VIT_VARIANTS; their controls narrow heads, neurons and the stream).
VIT_TRACKS = ("vit", "vit-timm")
#: Distillation (``+kd``) from the trained model: temperature 4, half soft and half hard labels.
KD_TEMPERATURE = 4.0


def fresh_model(cfg: TrainConfig, seed: int, data: ArrayDataset) -> nn.Module:
    """The model every method of a seed starts from in the from-scratch track: the same
    initialisation the ``Trainer`` draws (seeded the same way)."""
    torch.manual_seed(seed)
    return create(cfg.model, num_classes=data.num_classes, in_channels=data.shape[0], **cfg.model_kwargs)


def train_dense(cfg: TrainConfig, seed: int, folder: Path, train: ArrayDataset, epochs: int | None = None) -> nn.Module:
    """A dense model (no factors, no cut) on the track's split."""
    cfg = dataclasses.replace(cfg, seed=seed, sparsity="none", freeze_epoch=None, target_macs=None,
                              epochs=epochs or cfg.epochs, out_dir=str(folder))  # fmt: skip
    return Trainer(cfg, train_data=train, progress=False).fit(overwrite=True).compact


@torch.no_grad()
def control_scores(model: nn.Module, kind: str, seed: int) -> dict[str, torch.Tensor]:
    """Per channel gate, scores whose global order cuts the same fraction of every gate
    (``uniform``) or a random fraction of each (``random``); random channels within a gate."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for ref in sss.gates(model):
        n = ref.weight.numel()
        rank = (torch.randperm(n, generator=gen).float() + 1) / n
        scale = 1.0 if kind == "uniform" else float(torch.empty(1).uniform_(0.25, 1.0, generator=gen))
        out[ref.name] = rank * scale  # a gate cuts its channels with rank < threshold / scale
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


def _control(cfg: TrainConfig, start: nn.Module, kind: str, example: torch.Tensor, train: ArrayDataset,
             kinds: list[str]):  # fmt: skip
    gated = sss.attach(copy.deepcopy(start), example, structures=kinds)
    cut_to_target(gated, example, cfg.target_macs, control_scores(gated, kind, cfg.seed))
    at_cut = sss.prune(gated)
    tuned = Trainer(dataclasses.replace(cfg, sparsity="none", freeze_epoch=None, target_macs=None), train_data=train,
                    model=copy.deepcopy(at_cut).train(), progress=False).fit(overwrite=True)  # fmt: skip
    return at_cut, tuned.compact


def _gal(cfg: TrainConfig, track: str, folder: Path, train: ArrayDataset, dense: Path | None):
    extra = 0.0
    if track == "scratch":  # the teacher trains first, for half the epochs (shared by the targets; counted)
        teacher = folder.parent / f"gal-teacher_s{cfg.seed}"
        if not (teacher / "model.json").exists():
            train_dense(cfg, cfg.seed, teacher, train, epochs=cfg.epochs // 2)
        extra = float(sum(json.loads(line)["seconds"] for line in (teacher / "metrics.jsonl").open()))
        dense, tune_epochs = teacher / "model", cfg.epochs - cfg.epochs // 2 - 1
    else:
        tune_epochs = cfg.epochs - 1
    gal_cfg = GALConfig(model=cfg.model, model_kwargs=cfg.model_kwargs, teacher=str(dense),
                        structures=["block", "channel"], gamma={"block": 1.0, "channel": 0.05},
                        target_macs=cfg.target_macs, epochs=1, lr=0.01, seed=cfg.seed, train_subset=cfg.train_subset,
                        val_size=cfg.val_size, batch_size=cfg.batch_size, out_dir=str(folder / "gal"))  # fmt: skip
    gal = GALTrainer(gal_cfg, train_data=train, progress=False).fit(overwrite=True)
    tune = dataclasses.replace(cfg, sparsity="none", freeze_epoch=None, target_macs=None, epochs=tune_epochs,
                               lr=cfg.lr if track == "trained" else 0.05, out_dir=str(folder / "finetune"))  # fmt: skip
    tuned = Trainer(tune, train_data=train, model=copy.deepcopy(gal.compact).train(), progress=False).fit(
        overwrite=True
    )
    return gal.compact, tuned.compact, extra


def run_method(track: str, cfg: TrainConfig, method: str, folder: Path, train: ArrayDataset,
               dense: Path | None) -> tuple[nn.Module, nn.Module, float]:  # fmt: skip
    """Runs one method (``cfg`` carries the seed and the target); returns the model right after
    the cut, the final compact model and seconds spent outside this run that count (GAL's teacher)."""
    cfg = dataclasses.replace(cfg, out_dir=str(folder))
    example = torch.zeros(1, *train.shape)

    def start() -> nn.Module:
        if track in FROM_TRAINED:
            return sss.load(dense, trust_code=cfg.trusted_code).train()
        return fresh_model(cfg, cfg.seed, train)

    if is_sss(method):
        variant = VIT_VARIANTS[method.removesuffix("+kd")] if track in VIT_TRACKS else \
            {"structures": SSS_STRUCTURES[method.removesuffix("+kd")]}  # fmt: skip
        kinds = variant["structures"]
        gamma = cfg.gamma if track in FROM_TRAINED else {k: v for k, v in DEMO_CONFIG.gamma.items() if k in kinds}
        run = dataclasses.replace(cfg, **variant, gamma=gamma, init=str(dense) if dense else None,
                                  distill=KD_TEMPERATURE if method.endswith("+kd") else None)  # fmt: skip
        if track == "scratch":
            # The demo's shape in the same epochs: one selection epoch, then the compact model retrained
            # from its initial weights, schedule restarted (Liu et al.'s Scratch-E). Continuing after 2
            # epochs, as the peers do, gave 80.8-82.8% at 0.3 (seed 1; with rewind, distance steering,
            # magnitude factors, γ by MACs or a dense warm-up too), this 85.4% with channels
            # (docs/design.md, "The head-to-head with Torch-Pruning").
            run = dataclasses.replace(run, epochs=cfg.epochs - 1, freeze_epoch=1, after_freeze="retrain")
        result = Trainer(run, train_data=train, progress=False).fit(overwrite=True)
        return sss.prune(result.selected), result.compact, 0.0
    if method.removesuffix("+kd") in TP_METHODS:
        tp_method, kd = method.removesuffix("+kd"), method.endswith("+kd")
        cut_epoch = cfg.freeze_epoch if TP_METHODS[tp_method].sparse or track == "scratch" else 0
        run = dataclasses.replace(
            cfg,
            sparsity="none",
            freeze_epoch=None,
            target_macs=None,
            distill=KD_TEMPERATURE if kd else None,
            distill_teacher=str(dense) if kd else None,
        )
        trainer = TPTrainer(run, method=tp_method, target=cfg.target_macs, cut_epoch=cut_epoch, model=start(),
                            train_data=train)  # fmt: skip
        result = trainer.fit(overwrite=True)
        return trainer.at_cut, result.compact, 0.0
    if method in CONTROLS:
        kinds = ["head", "channel", "embedding"] if track in VIT_TRACKS else ["channel"]
        return (*_control(cfg, start(), method, example, train, kinds), 0.0)
    if method == "gal":
        return _gal(cfg, track, folder, train, dense)
    raise ValueError(f"unknown method {method!r}")


def timed_run(track: str, cfg: TrainConfig, method: str, target: float, seed: int, folder: Path,
              train: ArrayDataset, test: ArrayDataset, dense: Path | None, commit: str) -> dict:  # fmt: skip
    """One run's record (latency is timed later, every model together); its compact model is
    saved as ``folder/compact``."""
    cfg = dataclasses.replace(cfg, seed=seed, target_macs=target)
    start = time.perf_counter()
    at_cut, compact, extra = run_method(track, cfg, method, folder, train, dense)
    seconds = time.perf_counter() - start + extra
    sss.save(compact, folder / "compact")
    macs, params = sss.count(compact, torch.zeros(1, *test.shape))
    return {"method": method, "track": track, "target": target, "seed": seed,
            "accuracy": sss.evaluate(compact, test)[0], "accuracy_after_cut": sss.evaluate(at_cut, test)[0],
            "macs": macs, "params": params,
            "blocks_removed": len(sss.structures.removed_blocks(compact)), "seconds": seconds,
            "epochs": cfg.epochs, "commit": commit}  # fmt: skip
