"""Training configuration: a typed dataclass, read from YAML and overridden from the command line.

Every field's type and range is declared once, in its annotation; :meth:`TrainConfig.validate`
coerces and checks them all with pydantic (so ``1e-3`` in YAML, which YAML 1.1 reads as a
string, is a float) and reports every problem in one error, one line per field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from sss.budget.targets import TARGETS, parse_target

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]

#: Keys a resume may change: they change how the model trains from here, not its shape.
RESUMABLE_KEYS = frozenset({"epochs", "out_dir", "lr", "momentum", "weight_decay", "schedule", "milestones",
                            "lr_decay", "gamma", "eval_batch_size", "allow_collapse", "device", "amp", "compile",
                            "workers", "trust_model_code", "channels_last", "tensorboard", "rescale_streams",
                            "factor_floor", "keep_fraction"})  # fmt: skip


@dataclass
class TrainConfig:
    """Everything a training run depends on. Field names are the YAML keys.

    ``sparsity`` is the factor optimizer: ``apg`` (the paper's), ``ista``, ``sgd`` (L1
    subgradient, pruned at ``prune_threshold``), or ``none`` (a dense model, no factors).
    ``freeze_epoch`` (optional) ends the selection after that many epochs: the zero-factor
    structures are removed there and the rest of the same schedule trains the compact model.
    A fraction ends it inside an epoch (``0.25``: after a quarter of the first epoch's steps),
    which leaves a short fine-tune more of its epochs (docs/design.md, "freezing the selection").
    ``after_freeze`` says what the compact model starts from: ``continue`` keeps the trained
    weights (surviving factors folded in), ``rewind`` resets them to their initial values, as
    lottery-ticket rewinding does, for the rest of the schedule; ``retrain`` rewinds too and
    trains the compact model for the whole schedule again (``epochs`` more epochs, the learning
    rate schedule restarted: Liu et al.'s Scratch-E), so the run lasts ``freeze_epoch +
    epochs`` epochs (docs/design.md, "freezing the selection").
    ``round_to`` keeps pruned channel counts a multiple of that many (fast kernels like 8).
    ``gamma_macs_power`` p scales γ per gate by (MACs one of its structures costs)^p,
    normalised to 1 on average per kind: 0 (default) is the paper's uniform γ, 1 aims the
    penalty at compute, 0.5 is in between (docs/design.md, "channel selection").
    ``gamma_price: macs`` puts every kind on one price: each factor's γ is proportional to the
    MACs its structure frees (to the power ``gamma_macs_power``, 1 if left at 0), normalised over
    all factors together, so a head, a neuron, an embedding channel and a branch compete on one
    scale (``gamma`` is then one number); ``kind`` (default) normalises per kind.
    ``allow_collapse`` lets a run go on when its compact model's output no longer depends on
    the input (every path cut); by default that stops the run with an error.
    ``channels_last`` (``auto``: on CUDA only; see :meth:`sss.train.runtime.Runtime.channels_last`),
    ``device`` (``auto``: CUDA when present), ``amp`` (autocast precision; the factors and their
    optimizer stay fp32), ``compile`` (``torch.compile`` the training forward) and ``workers``
    (DataLoader processes for image folders) say where and how it computes; under ``torchrun``
    ``batch_size`` is the global batch, split evenly over the ranks. ``image_size`` and
    ``on_bad_image`` (``fail`` or ``skip``) apply to ``dataset: imagefolder``.
    ``target_macs`` / ``target_params`` aim the selection at a budget instead of a γ: a fraction of
    the dense model (``0.5``) or a count (``18M``); γ is then the starting strength that the run
    steers, and the selection lands within ±2% of the target at the freeze (or the end).
    ``target_latency`` (milliseconds per forward pass at ``latency_batch``, on the run's device,
    or a fraction of the dense model's latency, ``0.7x``) does the same with a latency model
    fitted on this machine at the start, and the compact model is timed at the landing: it ends
    at or under the target, within 3% timing noise. A fraction is checked against the dense
    model timed in the same pass, so a machine whose speed drifts does not move it.
    ``model`` is a zoo name or ``pkg.module:factory`` (a user's builder, kwargs from
    ``model_kwargs``); ``init`` starts it from trained weights (a ``.safetensors`` or
    ``.pt``/``.pth`` state dict, or a model saved by sss), with ``init_prefix`` stripped from the
    file's keys. ``distill`` (a temperature, e.g. 4) adds knowledge distillation from the model
    the run starts from (or ``distill_teacher``, a model saved by sss): the loss is
    ``(1 - distill_weight)·CE + distill_weight·T²·KL(teacher ‖ student)`` on logits softened by T.
    ``factor_init`` (``one``; ``magnitude``: each channel factor starts at its structure's
    weight magnitude, the inverse folded in; ``importance``: every layer gate's factors start at
    their structures' first-order importance per MAC, ranked over all kinds together) and
    ``steer`` (how a target steers γ: ``doubling`` a multiplier, or ``distance``: in units of
    the learning rate, by the factors' distance to zero) default to ``auto``: the second where
    ``init`` is set (docs/design.md, "from a trained model") or the selection starts late, the
    first otherwise; from trained weights the factors start by ``magnitude``, or by
    ``importance`` when ``structures`` has ``head`` or ``embedding``. ``factor_floor`` is where
    the weakest structure's factor starts (the strongest at 1): ``None`` takes the ranking's own,
    0.01 by ``magnitude`` and 0.001 by ``importance`` (:mod:`sss.budget.importance` gives the
    measurement). ``keep_fraction`` starts that fraction of each layer gate's strongest structures
    at 1, level with the strongest, so a budget takes them last: a prior that no layer is cut
    to nearly nothing first (a deep cut's fine-tune needs width everywhere: docs/architecture.md,
    "From a trained model"; off by default, it helped at 0.3 of the MACs and cost at 0.5).
    ``rescale_streams``: where the selection ends (the freeze, or the end of the run), each
    transformer residual stream (the embedding kind's) smaller than it was when the selection
    started gets that scale back, the same function (the selection shrinks it, and the fine-tune
    of a shrunken stream diverges: :mod:`sss.structures.stream_scale`).
    ``selection_start`` (epochs) trains densely first: the factors stay at 1, without penalty,
    until that epoch, where the selection starts from the weights trained so far as it would from
    a trained model (its factors from their magnitudes, steered by distance, under ``auto``).
    A config is code: ``model: pkg.module:factory`` imports and calls that factory, as
    ``--model`` does. A model file the run reads (``distill_teacher``, GAL's ``teacher``) may name
    only zoo models or ``model`` itself, unless ``trust_model_code`` allows any factory.
    ``tensorboard`` also writes TensorBoard event files to ``out_dir/tensorboard`` each epoch.
    The command-line flags that set fields (``--data-dir`` sets ``data_dir``, ``--out`` sets
    ``out_dir``) are declared once, each with the field it sets, in :mod:`sss.cli.flags`.
    """

    model: str = "resnet20"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    train_subset: PositiveInt | None = None
    val_size: PositiveInt = 5000
    augment_pad: NonNegativeInt = 2
    structures: Annotated[list[str], Field(min_length=1)] = field(default_factory=lambda: ["block"])
    sparsity: Literal["apg", "ista", "sgd", "none"] = "apg"
    gamma: NonNegativeFloat | dict[str, NonNegativeFloat] = 0.01
    gamma_macs_power: NonNegativeFloat = 0.0
    gamma_price: Literal["kind", "macs"] = "kind"
    prune_threshold: NonNegativeFloat = 0.0
    round_to: PositiveInt = 1
    freeze_epoch: PositiveFloat | None = None
    after_freeze: Literal["continue", "rewind", "retrain"] = "continue"
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 0.1
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: NonNegativeFloat = 1e-4
    schedule: Literal["step", "cosine", "constant"] = "cosine"
    milestones: list[PositiveInt] = field(default_factory=lambda: [])
    lr_decay: Annotated[float, Field(gt=0, le=1)] = 0.1
    seed: NonNegativeInt = 0
    channels_last: Literal["auto"] | bool = "auto"
    eval_batch_size: PositiveInt = 500
    out_dir: str = "runs/train"
    allow_collapse: bool = False
    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    compile: bool = False
    workers: NonNegativeInt = 0
    image_size: PositiveInt = 224
    on_bad_image: Literal["fail", "skip"] = "fail"
    target_macs: Annotated[float, Field(gt=0, allow_inf_nan=False)] | str | None = None
    target_params: Annotated[float, Field(gt=0, allow_inf_nan=False)] | str | None = None
    target_latency: Annotated[float, Field(gt=0, allow_inf_nan=False)] | str | None = None
    latency_batch: PositiveInt = 1
    init: str | None = None
    init_prefix: str = ""
    distill: PositiveFloat | None = None
    distill_weight: Annotated[float, Field(ge=0, le=1)] = 0.5
    distill_teacher: str | None = None
    factor_init: Literal["auto", "one", "magnitude", "importance"] = "auto"
    factor_floor: Annotated[float, Field(gt=0, lt=1)] | None = None
    keep_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.0
    steer: Literal["auto", "doubling", "distance"] = "auto"
    selection_start: NonNegativeInt = 0
    rescale_streams: bool = True
    trust_model_code: bool = False
    tensorboard: bool = False

    @property
    def trusted_code(self) -> bool | tuple[str, ...]:
        """The factories a model file read by this run (a teacher) may name: ``model``, which the
        user chose (a config is code), or any with ``trust_model_code``."""
        return True if self.trust_model_code else (self.model,)

    @property
    def from_trained(self) -> bool:
        """Whether the selection starts from trained weights (``init``, or a dense warm-up)."""
        return bool(self.init) or self.selection_start > 0

    @property
    def total_epochs(self) -> int:
        """Epochs the run lasts: ``epochs``, plus the selection's with ``after_freeze: retrain``."""
        return self.epochs + int(self.freeze_epoch or 0) * (self.after_freeze == "retrain")

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of ``lr`` during ``epoch`` (0-based): step decays or per-epoch cosine.
        With ``after_freeze: retrain`` the schedule starts again at the freeze."""
        if self.after_freeze == "retrain" and self.freeze_epoch is not None and epoch >= self.freeze_epoch:
            epoch -= int(self.freeze_epoch)
        if self.schedule == "step":
            return self.lr_decay ** sum(epoch >= m for m in self.milestones)
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))
        if self.schedule == "constant":
            return 1.0
        raise ValueError(f"schedule must be step, cosine or constant, got {self.schedule!r}")

    def validate(self) -> None:
        """Coerces every field to its declared type and checks ranges and cross-field rules, in
        place. Raises ``ValueError`` listing every problem, one per field."""
        try:
            checked = TypeAdapter(type(self)).validate_python(dataclasses.asdict(self))
        except ValidationError as e:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(_field_errors(e))) from None
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(checked, f.name))
        problems = self.cross_field_problems()
        if problems:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def dataset_options(self) -> dict[str, Any]:
        """The keywords of :func:`sss.data.load_dataset` this config sets."""
        return {"image_size": self.image_size, "on_bad_image": self.on_bad_image}

    def model_problems(self) -> list[str]:
        """What is wrong with ``model`` and ``model_kwargs`` (a name the registries do not know, a
        keyword its builder does not take)."""
        from sss.models import model_parameters

        try:
            accepted = model_parameters(self.model)
        except ValueError as e:
            return [str(e)]
        allowed = None if accepted is None else accepted - {"num_classes", "in_channels"}
        unknown = [] if allowed is None else sorted(set(self.model_kwargs) - allowed)
        if unknown:
            return [f"model_kwargs {unknown} are not keywords of {self.model} (it takes {sorted(allowed)}; "
                    "num_classes and in_channels come from the dataset)"]  # fmt: skip
        return []

    def cross_field_problems(self) -> list[str]:
        """The rules that involve more than one field, or the registries."""
        from sss.data import DATASETS
        from sss.structures import kind_names

        problems = self.model_problems()
        if self.dataset not in DATASETS:
            problems.append(f"dataset {self.dataset!r} is not one of {list(DATASETS)}")
        unknown_kinds = sorted(set(self.structures) - set(kind_names()))
        if unknown_kinds:
            problems.append(f"structures {unknown_kinds} are not kinds; choose from {list(kind_names())}")
        if self.sparsity == "sgd" and self.prune_threshold <= 0:
            problems.append("sparsity 'sgd' makes no exact zeros: set prune_threshold > 0 (e.g. 0.01)")
        if self.freeze_epoch is not None and not self.freeze_epoch < self.epochs:
            problems.append(f"freeze_epoch must be above 0 and below epochs ({self.epochs}), got {self.freeze_epoch}")
        if self.after_freeze == "retrain" and self.freeze_epoch is not None and self.freeze_epoch % 1:
            problems.append(f"after_freeze 'retrain' restarts the schedule on an epoch: freeze_epoch must be a "
                            f"whole number of epochs, got {self.freeze_epoch}")  # fmt: skip
        if self.selection_start and self.sparsity == "none":
            problems.append("selection_start needs factors: sparsity apg, ista or sgd")
        if self.selection_start and not self.selection_start < (self.freeze_epoch or self.epochs):
            problems.append(f"selection_start ({self.selection_start}) must come before the selection ends (epoch "
                            f"{self.freeze_epoch or self.epochs}: freeze_epoch, or epochs without one)")  # fmt: skip
        targets = [n for n in TARGETS if getattr(self, n) is not None]
        if len(targets) > 1:
            problems.append(f"give one target, not {' and '.join(targets)}")
        if targets and self.sparsity == "none":
            problems.append("a target needs factors to steer: sparsity apg, ista or sgd")
        for name in targets:
            try:
                parse_target(name, getattr(self, name))
            except ValueError as e:
                problems.append(str(e))
        if isinstance(self.gamma, dict) and self.gamma_price == "macs":
            problems.append("gamma_price 'macs' prices every kind on one scale: give gamma as one number")
        if isinstance(self.gamma, dict) and set(self.gamma) - set(self.structures):
            problems.append(f"gamma names kinds {sorted(set(self.gamma) - set(self.structures))} not in structures")
        return problems


def _field_errors(error: ValidationError) -> list[str]:
    """One line per field: its name, what is wrong (each alternative of a union), and the value."""
    by_field: dict[str, tuple[list[str], Any]] = {}
    for err in error.errors():
        name = str(err["loc"][0]) if err["loc"] else "config"
        index = "".join(f"[{p}]" for p in err["loc"][1:] if isinstance(p, int))
        messages, _ = by_field.setdefault(name + index, ([], err.get("input")))
        if err["msg"] not in messages:
            messages.append(err["msg"])
    return [f"{name}: {' or '.join(m[0].lower() + m[1:] for m in msgs)} (got {value!r})"
            for name, (msgs, value) in by_field.items()]  # fmt: skip


def _parse(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # a plain string; the field's type decides


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    cls: type[TrainConfig] = TrainConfig,
    values: dict[str, Any] | None = None,
) -> TrainConfig:
    """Reads a YAML config (or the defaults), applies ``key=value`` overrides, then ``values``.

    Overrides are parsed as YAML (``epochs=3``, ``milestones=[80,120]``); a nested builder
    keyword is set with a dot (``model_kwargs.shortcut=pad``). ``values`` are typed already
    (what command-line flags give) and are set as they are.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as e:
            raise ValueError(f"cannot read config file {path}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ValueError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a YAML mapping of config keys, got {type(loaded).__name__}")
        data.update(loaded)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        if key.startswith("model_kwargs."):
            kwargs = data.setdefault("model_kwargs", {})
            if not isinstance(kwargs, dict):
                raise ValueError(f"model_kwargs must be a mapping, got {kwargs!r}")
            kwargs[key.split(".", 1)[1]] = _parse(value)
        else:
            data[key] = _parse(value)
    data.update(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
    cfg = cls(**data)
    cfg.validate()
    return cfg
