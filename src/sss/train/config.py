"""Training configuration: a dataclass, read from YAML and overridden from the command line."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TrainConfig:
    """Everything a training run depends on. Field names are the YAML keys.

    ``sparsity`` is the factor optimizer: ``apg`` (the paper's), ``ista``, ``sgd`` (L1
    subgradient, pruned at ``prune_threshold``), or ``none`` (a dense model, no factors).
    ``freeze_epoch`` (optional) ends the selection after that many epochs: the zero-factor
    structures are removed there and the rest of the same schedule trains the compact model.
    ``after_freeze`` says what the compact model starts from: ``continue`` keeps the trained
    weights (surviving factors folded in), ``rewind`` resets them to their initial values, as
    lottery-ticket rewinding does (docs/design.md, "freezing the selection").
    ``round_to`` keeps pruned channel counts a multiple of that many (fast kernels like 8).
    ``gamma_macs_power`` p scales γ per gate by (MACs one of its structures costs)^p,
    normalised to 1 on average per kind: 0 (default) is the paper's uniform γ, 1 aims the
    penalty at compute, 0.5 is in between (docs/design.md, "channel selection").
    """

    model: str = "resnet20"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    train_subset: int | None = None
    val_size: int = 5000
    augment_pad: int = 2
    structures: list[str] = field(default_factory=lambda: ["block"])
    sparsity: str = "apg"
    gamma: float | dict[str, float] = 0.01
    gamma_macs_power: float = 0.0
    prune_threshold: float = 0.0
    round_to: int = 1
    freeze_epoch: int | None = None
    after_freeze: str = "continue"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=lambda: [])
    lr_decay: float = 0.1
    seed: int = 0
    channels_last: bool = True
    eval_batch_size: int = 500
    out_dir: str = "runs/train"

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of ``lr`` during ``epoch`` (0-based): step decays or per-epoch cosine."""
        if self.schedule == "step":
            return self.lr_decay ** sum(epoch >= m for m in self.milestones)
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))
        if self.schedule == "constant":
            return 1.0
        raise ValueError(f"schedule must be step, cosine or constant, got {self.schedule!r}")

    def validate(self) -> None:
        from sss.data import DATASETS
        from sss.models import list_models

        problems = []
        if self.model not in list_models():
            problems.append(f"model {self.model!r} is not one of {list_models()}")
        if self.dataset not in DATASETS:
            problems.append(f"dataset {self.dataset!r} is not one of {list(DATASETS)}")
        if self.sparsity not in ("apg", "ista", "sgd", "none"):
            problems.append(f"sparsity {self.sparsity!r} is not apg, ista, sgd or none")
        if self.sparsity == "sgd" and self.prune_threshold <= 0:
            problems.append("sparsity 'sgd' makes no exact zeros: set prune_threshold > 0 (e.g. 0.01)")
        if self.freeze_epoch is not None and not 0 < self.freeze_epoch < self.epochs:
            problems.append(
                f"freeze_epoch must be between 1 and epochs - 1 ({self.epochs - 1}), got {self.freeze_epoch}"
            )
        if self.after_freeze not in ("continue", "rewind"):
            problems.append(f"after_freeze must be 'continue' or 'rewind', got {self.after_freeze!r}")
        gammas = self.gamma.values() if isinstance(self.gamma, dict) else [self.gamma]
        if self.round_to < 1:
            problems.append(f"round_to must be >= 1, got {self.round_to}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or any(g < 0 for g in gammas):
            problems.append("need epochs >= 1, batch_size >= 1, lr > 0, gamma >= 0")
        if isinstance(self.gamma, dict) and set(self.gamma) - set(self.structures):
            problems.append(f"gamma names kinds {sorted(set(self.gamma) - set(self.structures))} not in structures")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))
        self.lr_factor(0)


def _coerce(name: str, value: Any) -> Any:
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if name == "model_kwargs" and not isinstance(value, dict):
        raise ValueError(f"model_kwargs must be a mapping, got {value!r}")
    return value


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, cls: type[TrainConfig] = TrainConfig
) -> TrainConfig:
    """Reads a YAML config (or the defaults) and applies ``key=value`` overrides.

    Values are parsed as YAML (``epochs=3``, ``milestones=[80,120]``); a nested builder
    keyword is set with a dot (``model_kwargs.shortcut=pad``).
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a YAML mapping of config keys")
        data.update(loaded)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        if key.startswith("model_kwargs."):
            data.setdefault("model_kwargs", {})[key.split(".", 1)[1]] = yaml.safe_load(value)
        else:
            data[key] = _coerce(key, value)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
    cfg = cls(**data)
    cfg.validate()
    return cfg
