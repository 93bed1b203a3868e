"""Entry point of the ``sss`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from sss.errors import SSSError
from sss.train.targets import TARGETS

#: Where and how a run computes: flags of train, gal and finetune (config keys of the same names).
RUNTIME_KEYS = ("device", "amp", "compile", "workers")
#: What a run starts from: trained weights, and distillation from them (train and finetune).
START_KEYS = ("init", "distill")


def _flag_values(args: argparse.Namespace, keys: tuple[str, ...]) -> dict[str, Any]:
    """The config values the command's flags set, typed as argparse read them. A target flag
    replaces the config's target and any other set with ``--set``, and says so."""
    values: dict[str, Any] = {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}
    flagged = [t for t in TARGETS if t in values]
    set_targets = [o.partition("=")[0] for o in args.set if o.partition("=")[0] in TARGETS]
    if flagged:
        values.update({t: None for t in TARGETS if t in keys and t not in flagged})
        for other in sorted(set(set_targets) - set(flagged)):
            print(f"note: --{flagged[0].replace('_', '-')} replaces --set {other}=...", file=sys.stderr)
    if getattr(args, "structures", None):
        values["structures"] = list(_kinds(args.structures))
    return values


def _kinds(text: str) -> tuple[str, ...]:
    from sss.structures import kind_names

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in kind_names()]
    if unknown:
        raise ValueError(f"--structures: unknown kind(s) {unknown}; choose from {', '.join(kind_names())}")
    return kinds


def _report(cfg, result) -> None:
    from sss.data import load_dataset
    from sss.measure import count, evaluate

    test = load_dataset(cfg.dataset, False, cfg.data_dir, **cfg.dataset_options())
    example = torch.zeros(1, *test.shape)
    gated_acc, compact_acc = evaluate(result.model, test)[0], evaluate(result.compact, test)[0]
    (dm, dp), (cm, cp) = count(result.model, example), count(result.compact, example)
    print(f"test accuracy {gated_acc:.2f}% (compact {compact_acc:.2f}%); MACs {dm / 1e6:.2f}M -> {cm / 1e6:.2f}M, "
          f"params {dp / 1e3:.1f}k -> {cp / 1e3:.1f}k; models in {cfg.out_dir}/")  # fmt: skip


def _cmd_train(args: argparse.Namespace) -> None:
    from sss.train import Trainer, load_config

    keys = ("model", "dataset", "data_dir", "epochs", "gamma", "sparsity", "out_dir", *TARGETS, "latency_batch",
            *START_KEYS, *RUNTIME_KEYS)  # fmt: skip
    cfg = load_config(args.config, args.set, values=_flag_values(args, keys))
    _report(cfg, Trainer(cfg).fit(resume=args.resume, overwrite=args.overwrite))


def _cmd_gal(args: argparse.Namespace) -> None:
    from sss.gal import GALConfig, GALTrainer
    from sss.serialization import load
    from sss.train import load_config

    keys = ("teacher", "dataset", "data_dir", "epochs", "gamma", "mu", "out_dir", *TARGETS, "latency_batch",
            *RUNTIME_KEYS)  # fmt: skip
    cfg = load_config(args.config, args.set, cls=GALConfig, values=_flag_values(args, keys))
    cfg.model = _zoo_name(load(cfg.teacher), cfg.teacher)
    _report(cfg, GALTrainer(cfg).fit(resume=args.resume, overwrite=args.overwrite))


def _cmd_finetune(args: argparse.Namespace) -> None:
    from sss.serialization import load
    from sss.train import Trainer, load_config

    keys = ("dataset", "data_dir", "epochs", "lr", "out_dir", *START_KEYS, *RUNTIME_KEYS)
    if args.saved is None:  # a plain model: --model (zoo or pkg.module:factory) and --init weights
        if not args.init:
            raise ValueError("finetune needs a model saved by sss (sss finetune PATH) or --model and --init")
        cfg = load_config(args.config, args.set, values={"sparsity": "none", **_flag_values(args, ("model", *keys))})
        _report(cfg, Trainer(cfg).fit(resume=args.resume, overwrite=args.overwrite))
        return
    model = load(args.saved)
    values = {"model": _zoo_name(model, args.saved), "sparsity": "none", **_flag_values(args, keys)}
    cfg = load_config(args.config, args.set, values=values)
    _report(cfg, Trainer(cfg, model=model.train()).fit(resume=args.resume, overwrite=args.overwrite))


def _zoo_name(model: torch.nn.Module, path: str) -> str:
    spec = getattr(model, "sss_spec", None)
    if spec is None:
        raise ValueError(f"{path} is not a zoo model; train it from Python with sss.train.Trainer(cfg, model=...)")
    return spec["name"]


def _example(args: argparse.Namespace, model: torch.nn.Module) -> torch.Tensor:
    """One input of ``--input-shape``, else of the shape recorded when factors were attached,
    else 32x32; ``ValueError`` naming the shape if the model does not run on it."""
    from sss.structures.history import input_shape

    spec = getattr(model, "sss_spec", None) or {"kwargs": {}}
    shape = args.input_shape or input_shape(model) or [spec["kwargs"].get("in_channels", 3), 32, 32]
    example = torch.zeros(1, *shape)
    try:
        with torch.no_grad():
            model.eval()(example)
    except RuntimeError as e:
        recorded = f" (it was attached with {' '.join(map(str, input_shape(model)))})" if input_shape(model) else ""
        raise ValueError(f"{args.model} does not run on an input of shape {' '.join(map(str, shape))}{recorded}: "
                         f"{str(e).splitlines()[0]}; pass --input-shape C H W") from None  # fmt: skip
    return example


def _cmd_prune(args: argparse.Namespace) -> None:
    from sss.measure import count
    from sss.serialization import load, save
    from sss.structures import gates, kind_names
    from sss.surgery import prune, zero_small_factors
    from sss.train.checks import collapse_warnings, is_constant_output

    model = load(args.model)
    if not gates(model):
        raise SystemExit(f"{args.model} has no scaling factors: nothing to prune (is it already compact?)")
    example = _example(args, model)
    if args.threshold > 0:
        zero_small_factors(model, args.threshold)
    kinds = _kinds(args.structures) if args.structures else kind_names()
    compact = prune(model, round_to=args.round_to, structures=kinds)
    (dm, dp), (cm, cp) = count(model, example), count(compact, example)
    save(compact, args.out)
    for warning in collapse_warnings(model):
        print(f"warning: {warning}", file=sys.stderr)
    if is_constant_output(compact, torch.randn(8, *example.shape[1:], generator=torch.Generator().manual_seed(0))):
        print("warning: the compact model gives the same output for every input: the zero factors cut every path",
              file=sys.stderr)  # fmt: skip
    zeros = {k: sum(g.num_zero for g in gates(model) if g.kind == k) for k in kinds}
    removed = ", ".join(f"{n} {k}(s)" for k, n in zeros.items() if n)
    print(f"removed {removed or 'nothing'}: MACs {dm / 1e6:.2f}M -> {cm / 1e6:.2f}M, "
          f"params {dp / 1e3:.1f}k -> {cp / 1e3:.1f}k; saved {args.out}")  # fmt: skip


def _cmd_eval(args: argparse.Namespace) -> None:
    from sss.cli.report import compare_models, format_table
    from sss.data import load_dataset
    from sss.serialization import load

    test = load_dataset(args.dataset, False, args.data_dir)
    models = {Path(p).stem: load(p) for p in args.models}
    timed = tuple(models) if args.latency else ()
    print(format_table(compare_models(models, test, latency_of=timed, device=args.device)))


def _cmd_export(args: argparse.Namespace) -> None:
    from sss.serialization import export_onnx, load

    model = load(args.model)
    print(f"wrote {export_onnx(model, _example(args, model), args.out)}")


def _cmd_demo(args: argparse.Namespace) -> None:
    import dataclasses

    from sss.cli.demo import DEMO_CONFIG, QUICK_CONFIG, run_demo

    config = QUICK_CONFIG if args.quick else DEMO_CONFIG
    picked = (("model", args.model), ("gamma", args.gamma), ("target_macs", args.target_macs),
              ("target_params", args.target_params), ("target_latency", args.target_latency),
              ("latency_batch", args.latency_batch))  # fmt: skip
    changes = {k: v for k, v in picked if v is not None}
    if args.gamma is not None or args.target_params is not None or args.target_latency is not None:
        changes.setdefault("target_macs", None)  # a γ or another target replaces the demo's MACs target
    if args.model:
        changes["model_kwargs"] = {}
    if args.structures:
        changes["structures"] = list(_kinds(args.structures))
        gamma = changes.get("gamma", config.gamma)
        if isinstance(gamma, dict):  # the demo's per-kind strengths, for the kinds asked for
            changes["gamma"] = {k: gamma.get(k, min(gamma.values())) for k in changes["structures"]}
    config = dataclasses.replace(config, **changes)
    config.validate()
    run_demo(args.out, config=config, baseline=args.baseline, data_dir=args.data_dir)


def _cmd_models(_: argparse.Namespace) -> None:
    from sss.models import list_models

    print("\n".join(list_models()))


def _structures_help() -> str:
    from sss.structures import kind_names

    return f"comma-separated structure kinds: {', '.join(kind_names())} (default: block)"


def _target_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target-macs", dest="target_macs",
                   help="aim at this many MACs: a fraction of dense (0.5) or a count (18M); γ is steered")  # fmt: skip
    p.add_argument("--target-params", dest="target_params", help="aim at this many parameters (0.5, 200k)")
    p.add_argument("--target-latency", dest="target_latency", metavar="MS|Fx",
                   help="aim at this forward latency on this machine (the run's device), timed at the landing: "
                        "milliseconds (2.5) or a fraction of the dense model's latency (0.7x)")  # fmt: skip
    p.add_argument("--latency-batch", dest="latency_batch", type=int, help="batch size of --target-latency (1)")


def _run_folder_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace the run that OUT holds (default: refuse)")
    p.add_argument("--device", help="auto (CUDA when present; one GPU per torchrun rank), cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], help="autocast precision (factors stay fp32)")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the training forward")
    p.add_argument("--workers", type=int, help="DataLoader processes decoding an image folder (default 0)")


def _start_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", metavar="PATH", help="start from trained weights: a .safetensors or .pt/.pth state dict, "
                                                  "or a model saved by sss (--set init_prefix=module. strips a prefix)")
    p.add_argument("--distill", type=float, metavar="T",
                   help="distil from the starting model at temperature T (e.g. 4; --set distill_weight=0.5)")


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sss", description="Sparse Structure Selection: train, prune, measure.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model with SSS (or densely with --sparsity none)")
    p.add_argument("--config", help="YAML config (see configs/); defaults apply to missing keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set epochs=3 --set model_kwargs.shortcut=pad")  # fmt: skip
    p.add_argument("--model", help="a zoo name (see `sss models`) or pkg.module:factory (your builder)")
    p.add_argument("--dataset")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--epochs", type=int)
    p.add_argument("--gamma", type=float)
    p.add_argument("--sparsity", choices=["apg", "ista", "sgd", "none"])
    p.add_argument("--structures", help=_structures_help())
    p.add_argument("--out", dest="out_dir")
    _target_flags(p)
    _start_flags(p)
    _run_folder_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("gal", help="GAL: prune a trained teacher without labels, adversarially")
    p.add_argument("--teacher", required=True, help="a model saved by `sss train` (e.g. runs/dense/model)")
    p.add_argument("--config", help="YAML config; keys as for train, plus mu, d_lr, mask_interval, restart")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dataset")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--epochs", type=int)
    p.add_argument("--gamma", type=float, help="λ, the masks' L1 strength")
    p.add_argument("--mu", type=float, help="weight of the teacher-student MSE")
    p.add_argument("--structures", help=_structures_help())
    p.add_argument("--out", dest="out_dir", default="runs/gal")
    _target_flags(p)
    _run_folder_flags(p)
    p.set_defaults(func=_cmd_gal)

    p = sub.add_parser("finetune", help="train a saved (compact) model further with cross-entropy")
    p.add_argument("saved", nargs="?", help="a model saved by sss (e.g. runs/gal/compact); or use --model/--init")
    p.add_argument("--model", help="with --init: a zoo name or pkg.module:factory to fine-tune")
    p.add_argument("--config", help="YAML config (training keys)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dataset")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--out", dest="out_dir", default="runs/finetune")
    _start_flags(p)
    _run_folder_flags(p)
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("prune", help="remove the zero-factor structures of a saved gated model")
    p.add_argument("model", help="a model saved by sss (e.g. runs/train/model)")
    p.add_argument("--out", required=True, help="where to save the compact model")
    p.add_argument("--threshold", type=_nonnegative_float, default=0.0, help="treat |λ| <= this as zero (L1-SGD runs)")
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"), help="for MAC counts")
    p.add_argument("--structures", help="comma-separated kinds to remove (default: all); others are folded")
    p.add_argument("--round-to", type=_positive_int, default=1, help="keep channel counts a multiple of this (e.g. 8)")
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser("eval", help="test accuracy, MACs, params (and latency) of saved models")
    p.add_argument("models", nargs="+")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--latency", action="store_true", help="also time batch 1 and 64")
    p.add_argument("--device", default="cpu", help="where to time them: cpu, cuda or cuda:N")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("export", help="write a saved compact model as ONNX (dynamic batch)")
    p.add_argument("model", help="a compact model saved by sss (e.g. runs/demo/compact)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"), help="one input, e.g. 1 28 28")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("demo", help="SSS on Fashion-MNIST end to end (about 12 minutes on 2 cores)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--data-dir", help="Fashion-MNIST IDX folder (default: the Debian package's)")
    p.add_argument("--quick", action="store_true", help="a 90-second smoke run")
    p.add_argument("--model", help="any zoo model instead of resnet20 (see `sss models`)")
    p.add_argument("--structures", help=_structures_help())
    p.add_argument("--gamma", type=float, help="one L1 strength for every kind, instead of the demo's MACs target")
    _target_flags(p)
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the dense model trained with the same schedule for comparison")  # fmt: skip
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (SSSError, ValueError) as e:
        print(f"sss {args.command}: error: {e}", file=sys.stderr)
        return 2
    except torch.distributed.DistError as e:  # another rank died: its own error is printed above by torchrun
        print(f"sss {args.command}: error: a process of this distributed job failed or was killed "
              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); fix its cause, then rerun the same "
              "command with --resume: every finished epoch is in the checkpoint", file=sys.stderr)  # fmt: skip
        return 2
    except OSError as e:  # a full disk, a vanished folder: name the file, no traceback
        where = f" ({e.filename})" if e.filename else ""
        print(f"sss {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # a torchrun job leaves its process group cleanly
    return 0


if __name__ == "__main__":
    sys.exit(main())
