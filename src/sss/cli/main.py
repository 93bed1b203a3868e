"""Entry point of the ``sss`` command."""

from __future__ import annotations

import argparse
import sys

import torch

from sss.cli import commands, flags
from sss.errors import SSSError


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

    # The training commands' flags, and the config fields they set, are declared once, in sss.cli.flags.
    p = sub.add_parser("train", help="train a model with SSS (or densely with --sparsity none)")
    flags.add_flags(p, *flags.TRAIN)
    p.set_defaults(func=commands.cmd_train)

    p = sub.add_parser("compress", help="a trained model to a budget: --init weights, select, land, fine-tune, report")
    flags.add_flags(p, *flags.COMPRESS)
    p.set_defaults(func=commands.cmd_compress)

    p = sub.add_parser("gal", help="GAL: prune a trained teacher without labels, adversarially")
    flags.add_flags(p, *flags.GAL)
    p.set_defaults(func=commands.cmd_gal)

    p = sub.add_parser("finetune", help="train a saved (compact) model further with cross-entropy")
    p.add_argument("saved", nargs="?", help="a model saved by sss (e.g. runs/gal/compact); or use --model/--init")
    flags.add_flags(p, *flags.FINETUNE)
    p.set_defaults(func=commands.cmd_finetune)

    p = sub.add_parser("prune", help="remove the zero-factor structures of a saved gated model")
    p.add_argument("model", help="a model saved by sss (e.g. runs/train/model)")
    p.add_argument("--out", required=True, help="where to save the compact model")
    p.add_argument("--threshold", type=_nonnegative_float, default=0.0, help="treat |λ| <= this as zero (L1-SGD runs)")
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"), help="for MAC counts")
    p.add_argument("--structures", help="comma-separated kinds to remove (default: all); others are folded")
    p.add_argument("--round-to", type=_positive_int, default=1, help="keep channel counts a multiple of this (e.g. 8)")
    flags.add_flags(p, flags.TRUST)
    p.set_defaults(func=commands.cmd_prune)

    p = sub.add_parser("eval", help="test accuracy, MACs, params (and latency) of saved models")
    p.add_argument("models", nargs="+")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--latency", action="store_true", help="also time batch 1 and 64")
    p.add_argument("--device", default="cpu", help="where to time them: cpu, cuda or cuda:N")
    flags.add_flags(p, flags.TRUST)
    p.set_defaults(func=commands.cmd_eval)

    p = sub.add_parser("export", help="write a saved compact model as ONNX (dynamic batch)")
    p.add_argument("model", help="a compact model saved by sss (e.g. runs/demo/compact)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"), help="one input, e.g. 1 28 28")
    flags.add_flags(p, flags.TRUST)
    p.set_defaults(func=commands.cmd_export)

    p = sub.add_parser("demo", help="SSS on Fashion-MNIST end to end (about 12 minutes on 2 cores)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--data-dir", help="Fashion-MNIST IDX folder (default: the Debian package's)")
    p.add_argument("--quick", action="store_true", help="a 90-second smoke run")
    demo_flags = flags.variant(
        flags.pick("model", "structures", "gamma"),
        model={"help": "any zoo model instead of resnet20 (see `sss models`)"},
        gamma={"help": "one L1 strength for every kind, instead of the demo's MACs target"},
    )
    flags.add_flags(p, demo_flags, flags.TARGETS)  # read by cmd_demo itself: the demo has its own configs
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
