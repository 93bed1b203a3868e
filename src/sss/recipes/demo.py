"""``sss demo``: SSS on Fashion-MNIST → block removal → before/after table, model and plot."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sss.data import ArrayDataset, iterate_batches, load_dataset
from sss.errors import CheckpointError
from sss.recipes.report import compare_models, format_table
from sss.serialization import load, save
from sss.serialization.state import load_state
from sss.structures import gates
from sss.structures.prune import prune
from sss.train import TrainConfig, Trainer, TrainResult, load_config
from sss.viz import plot_factor_trace

#: The shipped YAML recipes (``configs/`` at the repo root links here).
CONFIGS = Path(__file__).parent / "configs"
#: The demo recipe (``configs/fashion_mnist_resnet20_demo.yaml``): ResNet-20 with block and
#: channel factors on a 30k-image subset of the Fashion-MNIST training set (25k to train, 5k held
#: out for validation), 8 cosine epochs, aimed at 70% of the dense MACs. APG, its γ steered by the
#: budget controller from the file's starting strengths, selects in one epoch and lands within ±2%
#: of the target; then the zero structures are removed and the compact model, rewound to its
#: initial weights, trains for the dense model's whole 8-epoch schedule (``retrain``: 9 epochs in
#: all, at 0.83x the dense training's compute; docs/experiments/demo-recipe.md).
DEMO_CONFIG = load_config(CONFIGS / "fashion_mnist_resnet20_demo.yaml")
#: A short variant for tests and smoke runs: narrow net, 8k images, 4 epochs, no freeze (the
#: selection lands on the target at the end).
QUICK_CONFIG = dataclasses.replace(
    DEMO_CONFIG, model_kwargs={"width": 8}, train_subset=8000, val_size=1000, epochs=4, batch_size=64,
    freeze_epoch=None,
)  # fmt: skip


def _plot_block_factors(trace: list[dict], gated: nn.Module, path: Path, freeze_epoch: int | None) -> None:
    """λ of each block over training (the channel factors would be hundreds of lines); every
    factor when the model has no block factors."""
    refs, offsets, start = gates(gated), [], 0
    for r in refs:
        offsets.append((start, start + r.weight.numel()))
        start += r.weight.numel()
    chosen = [i for i, r in enumerate(refs) if r.kind == "block"] or list(range(len(refs)))
    columns = [k for i in chosen for k in range(*offsets[i])]
    picked = [{"epoch": s["epoch"], "values": [s["values"][k] for k in columns]} for s in trace]
    removed = sum(refs[i].num_zero for i in chosen)
    kind = "block" if refs and refs[chosen[0]].kind == "block" else "all"
    plot_factor_trace(picked, [refs[i].name for i in chosen for _ in range(refs[i].weight.numel())], path,
                      freeze_epoch=freeze_epoch, removed=removed, kind=kind)  # fmt: skip


def _test_outputs(model: nn.Module, test: ArrayDataset, n: int = 256) -> torch.Tensor:
    x, _ = next(iterate_batches(test, n, shuffle=False))
    with torch.no_grad():
        return model.eval()(x)


def _finished_run(folder: Path, cfg: TrainConfig) -> TrainResult | None:
    """The dense run in ``folder`` if it finished with ``cfg``'s training settings, else ``None``.
    Settings that cannot change a run without a freeze (``after_freeze``, ``out_dir``) and keys
    older runs lack are not compared."""
    try:
        state = load_state(folder / "checkpoint.safetensors")
        model = load(folder / "model")
    except (CheckpointError, OSError):
        return None
    saved, wanted = state["config"], dataclasses.asdict(cfg)
    same = all(saved[k] == v for k, v in wanted.items() if k in saved and k not in ("out_dir", "after_freeze"))
    if not same or state["epoch"] != cfg.total_epochs:
        return None
    return TrainResult(model, model, None, list(state["history"]))


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    quick: bool = False,
    config: TrainConfig | None = None,
    baseline: bool = True,
    reuse_dense: bool = False,
    data_dir: str | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict:
    """Trains ResNet-20 with SSS, removes the zero blocks and reports on the test set.

    ``config`` replaces the recipe (benchmarks use it for other models and structures).

    The table compares the gated model at the moment of removal, its compact form (the same
    function: exactness) and, when the selection was frozen early, the compact model after the
    remaining epochs. With ``baseline`` a dense model is trained with the same schedule too;
    ``reuse_dense`` keeps a finished dense run already in ``out_dir`` whose config matches.
    Returns the report, also saved as ``report.json``. A rerun replaces the demo's own runs
    in ``out_dir`` (``sss`` and ``dense``).
    """
    out = Path(out_dir)
    base = dataclasses.replace(config or (QUICK_CONFIG if quick else DEMO_CONFIG), data_dir=data_dir)
    train, test = load_dataset(base.dataset, True, data_dir), load_dataset(base.dataset, False, data_dir)
    start = time.perf_counter()
    aims = (("target_macs", "MACs target"), ("target_params", "parameter target"), ("target_latency", "latency target"))
    aim = next((f"{label} {getattr(base, k)}" for k, label in aims if getattr(base, k) is not None), f"γ={base.gamma}")
    kinds = "/".join(base.structures)
    log(f"== SSS: {base.model} on {base.dataset}, {kinds} factors, {aim}, {base.total_epochs} epochs ==")
    run = Trainer(dataclasses.replace(base, out_dir=str(out / "sss")), train_data=train, log=log,
                  progress=progress).fit(overwrite=True)  # fmt: skip
    gated = run.selected if run.selected is not None else run.model
    models: dict[str, nn.Module] = {}
    if baseline:
        log("== dense baseline: same model and schedule, no factors ==")
        dense_cfg = dataclasses.replace(base, sparsity="none", freeze_epoch=None, target_macs=None, target_params=None,
                                        target_latency=None, out_dir=str(out / "dense"))  # fmt: skip
        reused = _finished_run(out / "dense", dense_cfg) if reuse_dense else None
        if reused is not None:
            log(f"reusing the finished dense run in {out / 'dense'} (same config)")
        dense_run = reused or Trainer(dense_cfg, train_data=train, log=log, progress=progress).fit(overwrite=True)
        models["dense"] = dense_run.model
    models["SSS before removal"] = gated
    models["SSS after removal"] = prune(gated, round_to=base.round_to)
    if run.selected is not None:
        models["SSS final"] = run.compact
    final_name = list(models)[-1]
    before_name = "dense" if baseline else "SSS before removal"
    log("== measuring on the test set ==")
    rows = compare_models(models, test, latency_of=(before_name, final_name), rounds=3 if quick else 7)
    gated_out, removed_out = _test_outputs(gated, test), _test_outputs(models["SSS after removal"], test)
    before, final = rows[before_name], rows[final_name]
    report = {
        "config": dataclasses.asdict(base),
        "models": rows,
        "zero_factors": sum(g.num_zero for g in gates(gated)),
        "factors": sum(g.weight.numel() for g in gates(gated)),
        "mac_reduction": 1 - final["macs"] / before["macs"],
        "removal_accuracy_diff": rows["SSS before removal"]["accuracy"] - rows["SSS after removal"]["accuracy"],
        "removal_max_rel_diff": float((gated_out - removed_out).abs().max() / gated_out.abs().max()),
        "speedup": {b: before["latency_ms"][b] / final["latency_ms"][b] for b in ("1", "64")},
        "seconds": time.perf_counter() - start,
    }
    if baseline:
        report["accuracy_gap_vs_dense"] = rows["dense"]["accuracy"] - final["accuracy"]
        report["train_seconds"] = {"sss": sum(r["seconds"] for r in run.history),
                                   "dense": sum(r["seconds"] for r in dense_run.history)}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    save(run.compact, out / "compact")
    _plot_block_factors(run.factor_trace, gated, out / "factors.png", base.freeze_epoch)
    table = format_table(rows)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(table + "\n")
    log("\n" + table + "\n")
    gap = ""
    if baseline:
        diff = report["accuracy_gap_vs_dense"]
        gap = f", {abs(diff):.2f} points {'below' if diff >= 0 else 'above'} dense"
    log(
        f"{report['zero_factors']}/{report['factors']} {kinds} factors zero: "
        f"{100 * report['mac_reduction']:.1f}% fewer "
        f"MACs, {report['speedup']['64']:.2f}x faster at batch 64{gap}; removal changed test accuracy by "
        f"{report['removal_accuracy_diff']:.2f} points."
    )
    log(f"saved {out / 'compact.safetensors'} (+ .json), {out / 'factors.png'}, {out / 'report.json'} "
        f"in {report['seconds']:.0f}s")  # fmt: skip
    return report
