"""Entry point of the ``sss`` command."""

from __future__ import annotations

import argparse
import sys

import torch

from sss.cli import commands
from sss.errors import SSSError


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
    _trust_flag(p)


def _start_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--init",
        metavar="PATH",
        help="start from trained weights: a .safetensors or .pt/.pth state dict, "
        "or a model saved by sss (--set init_prefix=module. strips a prefix)",
    )
    p.add_argument(
        "--distill",
        type=float,
        metavar="T",
        help="distil from the starting model at temperature T (e.g. 4; --set distill_weight=0.5)",
    )


def _trust_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-model-code", dest="trust_model_code", action="store_const", const=True,
                   help="let a model file rebuild a model built by the pkg.module:factory it names (imports and "
                        "calls that code; by default a file may name only zoo models)")  # fmt: skip


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
    p.set_defaults(func=commands.cmd_train)

    p = sub.add_parser("compress", help="a trained model to a budget: --init weights, select, land, fine-tune, report")
    p.add_argument("--init", required=True, metavar="PATH", help="the trained weights (.safetensors, .pt/.pth, or sss)")
    p.add_argument("--model", default="resnet20", help="a zoo name or pkg.module:factory (default resnet20)")
    p.add_argument("--config", help="YAML config; compress's defaults apply only without one")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dataset")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--epochs", type=int, help="epochs in all, the one-epoch selection included (default 4)")
    p.add_argument("--lr", type=float, help="the fine-tuning learning rate (default 0.01)")
    p.add_argument("--structures", help=_structures_help().replace("default: block", "default: channel"))
    p.add_argument("--distill", type=float, metavar="T", help="distil from the trained model at temperature T")
    p.add_argument("--out", dest="out_dir")
    _target_flags(p)
    _run_folder_flags(p)
    p.set_defaults(func=commands.cmd_compress)

    p = sub.add_parser("gal", help="GAL: prune a trained teacher without labels, adversarially")
    p.add_argument(
        "--teacher",
        required=True,
        help="a model saved by sss (e.g. runs/dense/model), or trained weights (.safetensors, .pt/.pth) for --model",
    )
    p.add_argument("--model", help="with a state-dict --teacher: a zoo name or pkg.module:factory (default resnet20)")
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
    p.set_defaults(func=commands.cmd_gal)

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
    p.set_defaults(func=commands.cmd_finetune)

    p = sub.add_parser("prune", help="remove the zero-factor structures of a saved gated model")
    p.add_argument("model", help="a model saved by sss (e.g. runs/train/model)")
    p.add_argument("--out", required=True, help="where to save the compact model")
    p.add_argument("--threshold", type=_nonnegative_float, default=0.0, help="treat |λ| <= this as zero (L1-SGD runs)")
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"), help="for MAC counts")
    p.add_argument("--structures", help="comma-separated kinds to remove (default: all); others are folded")
    p.add_argument("--round-to", type=_positive_int, default=1, help="keep channel counts a multiple of this (e.g. 8)")
    _trust_flag(p)
    p.set_defaults(func=commands.cmd_prune)

    p = sub.add_parser("eval", help="test accuracy, MACs, params (and latency) of saved models")
    p.add_argument("models", nargs="+")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--latency", action="store_true", help="also time batch 1 and 64")
    p.add_argument("--device", default="cpu", help="where to time them: cpu, cuda or cuda:N")
    _trust_flag(p)
    p.set_defaults(func=commands.cmd_eval)

    p = sub.add_parser("export", help="write a saved compact model as ONNX (dynamic batch)")
    p.add_argument("model", help="a compact model saved by sss (e.g. runs/demo/compact)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"), help="one input, e.g. 1 28 28")
    _trust_flag(p)
    p.set_defaults(func=commands.cmd_export)

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
    p.set_defaults(func=commands.cmd_demo)

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=commands.cmd_models)
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
