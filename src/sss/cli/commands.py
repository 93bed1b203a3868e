"""The commands of the ``sss`` CLI: each reads its parsed flags and runs (``sss.cli.main`` parses)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sss.cli import flags
from sss.cli.flags import flag_values, parse_kinds


def _report(cfg, result) -> None:
    from sss.data import load_dataset
    from sss.measure import count, evaluate

    test = load_dataset(cfg.dataset, False, cfg.data_dir, **cfg.dataset_options())
    example = torch.zeros(1, *test.shape)
    gated_acc, compact_acc = evaluate(result.model, test)[0], evaluate(result.compact, test)[0]
    (dm, dp), (cm, cp) = count(result.model, example), count(result.compact, example)
    print(f"test accuracy {gated_acc:.2f}% (compact {compact_acc:.2f}%); MACs {dm / 1e6:.2f}M -> {cm / 1e6:.2f}M, "
          f"params {dp / 1e3:.1f}k -> {cp / 1e3:.1f}k; models in {cfg.out_dir}/")  # fmt: skip


def cmd_train(args: argparse.Namespace) -> None:
    from sss.train import Trainer, load_config

    cfg = load_config(args.config, args.set, values=flag_values(args, *flags.TRAIN))
    _report(cfg, Trainer(cfg).fit(resume=args.resume, overwrite=args.overwrite))


def cmd_compress(args: argparse.Namespace) -> None:
    from sss.recipes.compress import DEFAULTS, CompressConfig, run_compress
    from sss.train import load_config

    given = {k.partition("=")[0] for k in args.set}
    defaults = {k: v for k, v in DEFAULTS.items() if k not in given and not (args.config and k != "out_dir")}
    cfg = load_config(args.config, args.set, CompressConfig, values={**defaults, **flag_values(args, *flags.COMPRESS)})
    run_compress(cfg, resume=args.resume, overwrite=args.overwrite)


def cmd_gal(args: argparse.Namespace) -> None:
    from sss.gal import GALConfig, GALTrainer
    from sss.serialization import load
    from sss.serialization.model_io import is_saved_model
    from sss.train import load_config

    cfg = load_config(args.config, args.set, cls=GALConfig, values=flag_values(args, *flags.GAL))
    if is_saved_model(cfg.teacher):  # else a state dict: --model (default resnet20) says what it fits
        cfg.model = _zoo_name(load(cfg.teacher, trust_code=cfg.trusted_code), cfg.teacher)
    _report(cfg, GALTrainer(cfg).fit(resume=args.resume, overwrite=args.overwrite))


def cmd_finetune(args: argparse.Namespace) -> None:
    from sss.serialization import load
    from sss.train import Trainer, load_config

    values = flag_values(args, *flags.FINETUNE)
    if args.saved is None:  # a plain model: --model (zoo or pkg.module:factory) and --init weights
        if not args.init:
            raise ValueError("finetune needs a model saved by sss (sss finetune PATH) or --model and --init")
        cfg = load_config(args.config, args.set, values={"sparsity": "none", **values})
        _report(cfg, Trainer(cfg).fit(resume=args.resume, overwrite=args.overwrite))
        return
    model = load(args.saved, trust_code=trusted_code(args))
    values.pop("model", None)  # the saved model is the model; --model only lets its file name that factory
    values = {"model": _zoo_name(model, args.saved), "sparsity": "none", **values}
    cfg = load_config(args.config, args.set, values=values)
    _report(cfg, Trainer(cfg, model=model.train()).fit(resume=args.resume, overwrite=args.overwrite))


def trusted_code(args: argparse.Namespace) -> bool | tuple[str, ...]:
    """The factories a model file given to this command may name: any with
    ``--trust-model-code``, else the ``--model`` given on the command line (none without)."""
    if getattr(args, "trust_model_code", None):
        return True
    return (args.model,) if getattr(args, "model", None) else ()


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


def cmd_prune(args: argparse.Namespace) -> None:
    from sss.measure import count
    from sss.measure.collapse import collapse_warnings, is_constant_output
    from sss.serialization import load, save
    from sss.structures import gates, kind_names
    from sss.structures.prune import prune, zero_small_factors

    model = load(args.model, trust_code=bool(args.trust_model_code))
    if not gates(model):
        raise ValueError(f"{args.model} has no scaling factors: nothing to prune (is it already compact?)")
    example = _example(args, model)
    if args.threshold > 0:
        zero_small_factors(model, args.threshold)
    chosen = parse_kinds(args.structures) if args.structures else kind_names()
    compact = prune(model, round_to=args.round_to, structures=chosen)
    (dm, dp), (cm, cp) = count(model, example), count(compact, example)
    save(compact, args.out)
    for warning in collapse_warnings(model):
        print(f"warning: {warning}", file=sys.stderr)
    if is_constant_output(compact, torch.randn(8, *example.shape[1:], generator=torch.Generator().manual_seed(0))):
        print("warning: the compact model gives the same output for every input: the zero factors cut every path",
              file=sys.stderr)  # fmt: skip
    zeros = {k: sum(g.num_zero for g in gates(model) if g.kind == k) for k in chosen}
    removed = ", ".join(f"{n} {k}(s)" for k, n in zeros.items() if n)
    print(f"removed {removed or 'nothing'}: MACs {dm / 1e6:.2f}M -> {cm / 1e6:.2f}M, "
          f"params {dp / 1e3:.1f}k -> {cp / 1e3:.1f}k; saved {args.out}")  # fmt: skip


def cmd_eval(args: argparse.Namespace) -> None:
    from sss.data import load_dataset
    from sss.recipes.report import compare_models, format_table
    from sss.serialization import load

    test = load_dataset(args.dataset, False, args.data_dir)
    models = {Path(p).stem: load(p, trust_code=bool(args.trust_model_code)) for p in args.models}
    timed = tuple(models) if args.latency else ()
    print(format_table(compare_models(models, test, latency_of=timed, device=args.device)))


def cmd_export(args: argparse.Namespace) -> None:
    from sss.serialization import export_onnx, load

    model = load(args.model, trust_code=bool(args.trust_model_code))
    print(f"wrote {export_onnx(model, _example(args, model), args.out)}")


def cmd_demo(args: argparse.Namespace) -> None:
    import dataclasses

    from sss.recipes.demo import DEMO_CONFIG, QUICK_CONFIG, run_demo

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
        changes["structures"] = list(parse_kinds(args.structures))
        gamma = changes.get("gamma", config.gamma)
        if isinstance(gamma, dict):  # the demo's per-kind strengths, for the kinds asked for
            changes["gamma"] = {k: gamma.get(k, min(gamma.values())) for k in changes["structures"]}
    config = dataclasses.replace(config, **changes)
    config.validate()
    run_demo(args.out, config=config, baseline=args.baseline, data_dir=args.data_dir)


def cmd_models(_: argparse.Namespace) -> None:
    from sss.models import list_models

    print("\n".join(list_models()))
