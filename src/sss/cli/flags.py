"""The flags of ``sss train``, ``compress``, ``gal`` and ``finetune``, declared once.

Each :class:`Flag` names the config field it sets (``key``), so the same table builds the
subparsers (:func:`add_flags`) and maps their parsed values back to config values
(:func:`flag_values`): no command lists its config keys again, and tests/test_cli_flags.py
checks every key against the config's fields.
The groups say what the flags are for: :data:`COMMON` to every training command, :data:`TARGETS`
(a budget instead of a γ), :data:`START` (trained weights to start from), :data:`RUNTIME` (the run
folder and where the run computes), and :data:`CHOICES`, from which each command picks its own.
A command that words a flag differently passes the change with :func:`variant`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sss.budget.targets import TARGETS as TARGET_KEYS


@dataclass(frozen=True)
class Flag:
    """One command-line flag.

    Attributes:
        option: The option string, e.g. ``--data-dir``.
        key: The config field the flag sets; ``None`` for a flag of the command itself
            (``--config``, ``--resume``), which :func:`flag_values` leaves out.
        help: The help text, or a function giving it when the parser is built (registered
            structure kinds can change until then).
        type: What argparse converts the text with (``None``: kept as text).
        metavar: The value's name in the help.
        choices: The values allowed.
        action: ``store_true``, ``store_const`` (stores ``True``; unset stays ``None``, so the
            config's value stands) or ``append``; ``None`` stores the value.
        default: The value when the flag is absent.
        required: Whether the command refuses to run without it.
        dest: The attribute of the parsed namespace; by default ``key``, else the option's name.
    """

    option: str
    key: str | None
    help: str | Callable[[], str] | None = None
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    action: str | None = None
    default: Any = None
    required: bool = False
    dest: str = ""

    def __post_init__(self) -> None:
        if not self.dest:  # frozen: set through object.__setattr__, once, at construction
            object.__setattr__(self, "dest", self.key or self.option.removeprefix("--").replace("-", "_"))

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Declares this flag on ``parser``."""
        kwargs: dict[str, Any] = {"dest": self.dest, "help": self.help() if callable(self.help) else self.help}
        if self.action is not None:
            kwargs["action"] = self.action
        if self.action == "store_const":
            kwargs["const"] = True
        for name in ("type", "metavar", "choices", "default", "required"):
            if getattr(self, name) not in (None, False):
                kwargs[name] = getattr(self, name)
        parser.add_argument(self.option, **kwargs)


def structures_help(default: str = "block") -> str:
    """Help of ``--structures``, listing the kinds registered when the parser is built."""
    from sss.structures import kind_names

    return f"comma-separated structure kinds: {', '.join(kind_names())} (default: {default})"


def datasets_help() -> str:
    """Help of ``--dataset``, listing the named datasets (read when the parser is built: sss.data is heavy)."""
    from sss.data.datasets import DATASETS

    return f"{', '.join(DATASETS)} (default fashion-mnist; imagefolder reads --data-dir's train/ and val/)"


#: Every training command: which config, overridden how, on which data, for how long, saved where.
COMMON = (
    Flag("--config", None, "YAML config (see configs/); defaults apply to missing keys"),
    Flag("--set", None, "override a config key, e.g. --set epochs=3 --set model_kwargs.shortcut=pad",
         metavar="KEY=VALUE", action="append", default=[]),
    Flag("--dataset", "dataset", datasets_help),
    Flag("--data-dir", "data_dir", "the dataset's folder (Fashion-MNIST: the Debian package's by default)"),
    Flag("--epochs", "epochs", "epochs to train (default 10)", type=int),
    Flag("--out", "out_dir", "the run folder: its checkpoint, metrics.jsonl and saved models"),
)  # fmt: skip
#: A budget for the selection instead of a γ (:data:`sss.budget.targets.TARGETS`); one replaces the others.
TARGETS = (
    Flag("--target-macs", "target_macs",
         "aim at this many MACs: a fraction of dense (0.5) or a count (18M); γ is steered"),
    Flag("--target-params", "target_params", "aim at this many parameters (0.5, 200k)"),
    Flag("--target-latency", "target_latency", "aim at this forward latency on this machine (the run's device), "
         "timed at the landing: milliseconds (2.5) or a fraction of the dense model's latency (0.7x)",
         metavar="MS|Fx"),
    Flag("--latency-batch", "latency_batch", "batch size of --target-latency (1)", type=int),
)  # fmt: skip
#: What a run starts from: trained weights, and distillation from them.
START = (
    Flag("--init", "init", "start from trained weights: a .safetensors or .pt/.pth state dict, or a model saved by "
         "sss (--set init_prefix=module. strips a prefix)", metavar="PATH"),
    Flag("--distill", "distill", "distil from the starting model at temperature T (e.g. 4; --set distill_weight=0.5)",
         type=float, metavar="T"),
)  # fmt: skip
#: Which factories a model file may name; also a flag of ``prune``, ``eval`` and ``export``.
TRUST = (
    Flag("--trust-model-code", "trust_model_code", "let a model file rebuild a model built by the pkg.module:factory "
         "it names (imports and calls that code; by default a file may name only zoo models)", action="store_const"),
)  # fmt: skip
#: The run folder (resume or replace it), and where and how the run computes.
RUNTIME = (
    Flag("--resume", None, "continue from OUT/checkpoint.safetensors", action="store_true"),
    Flag("--overwrite", None, "replace the run that OUT holds (default: refuse)", action="store_true"),
    Flag("--device", "device", "auto (CUDA when present; one GPU per torchrun rank), cpu, cuda or cuda:N"),
    Flag("--amp", "amp", "autocast precision (factors stay fp32)", choices=("none", "bf16", "fp16")),
    Flag("--compile", "compile", "torch.compile the training forward", action="store_const"),
    Flag("--workers", "workers", "DataLoader processes decoding an image folder (default 0)", type=int),
    Flag(
        "--tensorboard",
        "tensorboard",
        "also write TensorBoard event files to OUT/tensorboard (loss, accuracy, lr, "
        "compact MACs, zero factors and γ per kind, factor histograms)",
        action="store_const",
    ),
    *TRUST,
)
#: The model and how it is selected: each command picks those it takes, with :func:`pick`.
CHOICES = {
    flag.dest: flag
    for flag in (
        Flag("--model", "model", "a zoo name (see `sss models`) or pkg.module:factory (your builder)"),
        Flag("--teacher", "teacher", "a model saved by sss (e.g. runs/dense/model), or trained weights (.safetensors, "
             ".pt/.pth) for --model", required=True),
        Flag("--gamma", "gamma", "γ, the factors' L1 strength (default 0.01); a target flag steers it", type=float),
        Flag("--mu", "mu", "weight of the teacher-student MSE", type=float),
        Flag("--sparsity", "sparsity", "the factors' optimizer: apg (the paper's), ista, sgd (L1 subgradient) or none "
             "(a dense model)", choices=("apg", "ista", "sgd", "none")),
        Flag("--lr", "lr", "the learning rate (default 0.1)", type=float),
        Flag("--structures", "structures", structures_help),
    )
}  # fmt: skip


def pick(*dests: str) -> tuple[Flag, ...]:
    """The flags of :data:`CHOICES` with these dests, in this order."""
    return tuple(CHOICES[dest] for dest in dests)


def variant(flags: Sequence[Flag], **changes: dict[str, Any]) -> tuple[Flag, ...]:
    """``flags`` with the fields of some changed for one command, by dest: ``epochs={"help": ...}``."""
    unknown = set(changes) - {flag.dest for flag in flags}
    if unknown:  # a typo would otherwise leave the flag silently unchanged
        raise KeyError(f"no flag with dest {sorted(unknown)}")
    return tuple(dataclasses.replace(flag, **changes.get(flag.dest, {})) for flag in flags)


def add_flags(parser: argparse.ArgumentParser, *groups: Sequence[Flag]) -> None:
    """Declares the flags of ``groups`` on ``parser``, in order."""
    for group in groups:
        for flag in group:
            flag.add_to(parser)


#: The flags of each training command, in the order its help lists them (a positional argument
#: such as finetune's saved model is declared by :func:`sss.cli.main.build_parser`).
TRAIN = (pick("model"), COMMON, pick("gamma", "sparsity", "structures"), TARGETS, START, RUNTIME)
COMPRESS = (
    variant(START, init={"required": True, "help": "the trained weights (.safetensors, .pt/.pth, or sss)"},
            distill={"help": "distil from the trained model at temperature T"}),
    variant(pick("model"),
            model={"default": "resnet20", "help": "a zoo name or pkg.module:factory (default resnet20)"}),
    variant(COMMON, config={"help": "YAML config; compress's defaults apply only without one"},
            epochs={"help": "epochs in all, the one-epoch selection included (default 4)"}),
    variant(pick("lr", "structures"), lr={"help": "the fine-tuning learning rate (default 0.01)"},
            structures={"help": lambda: structures_help(default="channel")}),
    TARGETS,
    RUNTIME,
)  # fmt: skip
GAL = (
    variant(pick("teacher", "model"),
            model={"help": "with a state-dict --teacher: a zoo name or pkg.module:factory (default resnet20)"}),
    variant(COMMON, config={"help": "YAML config; keys as for train, plus mu, d_lr, mask_interval, restart"},
            out_dir={"default": "runs/gal"}),
    variant(pick("gamma", "mu", "structures"), gamma={"help": "λ, the masks' L1 strength"}),
    TARGETS,
    RUNTIME,
)  # fmt: skip
FINETUNE = (
    variant(pick("model"), model={"help": "with --init: a zoo name or pkg.module:factory to fine-tune"}),
    variant(COMMON, config={"help": "YAML config (training keys)"}, out_dir={"default": "runs/finetune"}),
    pick("lr"),
    START,
    RUNTIME,
)  # fmt: skip


def parse_kinds(text: str) -> tuple[str, ...]:
    """The structure kinds of a ``--structures`` value; ``ValueError`` naming any unknown one."""
    from sss.structures import kind_names

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in kind_names()]
    if unknown:
        raise ValueError(f"--structures: unknown kind(s) {unknown}; choose from {', '.join(kind_names())}")
    return kinds


def flag_values(args: argparse.Namespace, *groups: Sequence[Flag]) -> dict[str, Any]:
    """The config values that the flags of ``groups`` set, typed as argparse read them.

    A target flag replaces the config's target and any other set with ``--set``, and says so;
    ``--structures`` becomes a list of checked kinds (an empty one keeps the config's).
    """
    flags = [flag for group in groups for flag in group if flag.key is not None]
    values: dict[str, Any] = {f.key: getattr(args, f.dest) for f in flags if getattr(args, f.dest, None) is not None}
    flagged = [t for t in TARGET_KEYS if t in values]
    set_targets = [o.partition("=")[0] for o in args.set if o.partition("=")[0] in TARGET_KEYS]
    if flagged:
        values.update({t: None for t in TARGET_KEYS if t in {f.key for f in flags} and t not in flagged})
        for other in sorted(set(set_targets) - set(flagged)):
            print(f"note: --{flagged[0].replace('_', '-')} replaces --set {other}=...", file=sys.stderr)
    structures = values.pop("structures", None)
    if structures:
        values["structures"] = list(parse_kinds(structures))
    return values
