"""``sss demo``: SSS on Fashion-MNIST → block removal → before/after table, model and plot."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sss.cli.report import compare_models, format_table
from sss.data import load_dataset
from sss.serialization import save
from sss.structures import gates
from sss.train import TrainConfig, Trainer
from sss.viz import plot_factor_trace

#: The demo recipe: ResNet-20 with block factors, a 30k-image subset of Fashion-MNIST,
#: 8 cosine epochs. γ was chosen on the validation split (docs/design.md, "demo recipe").
DEMO_CONFIG = TrainConfig(
    model="resnet20", dataset="fashion-mnist", train_subset=30_000, val_size=5000, epochs=8, gamma=0.05,
    lr=0.1, batch_size=128, schedule="cosine", augment_pad=2,
)  # fmt: skip
#: A short variant for tests and smoke runs: narrow net, 8k images, 4 epochs (about 40 s).
QUICK_CONFIG = dataclasses.replace(
    DEMO_CONFIG, model_kwargs={"width": 8}, train_subset=8000, val_size=1000, epochs=4, batch_size=64, gamma=0.1
)


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    quick: bool = False,
    data_dir: str | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict:
    """Trains a dense baseline and an SSS model with the same schedule, removes the zero
    blocks, and compares them on the test set. Returns the report (also saved as JSON)."""
    out = Path(out_dir)
    base = dataclasses.replace(QUICK_CONFIG if quick else DEMO_CONFIG, data_dir=data_dir)
    train, test = load_dataset(base.dataset, True, data_dir), load_dataset(base.dataset, False, data_dir)
    start = time.perf_counter()
    log(f"== SSS: {base.model} on {base.dataset}, γ={base.gamma}, {base.epochs} epochs ==")
    sss_run = Trainer(dataclasses.replace(base, out_dir=str(out / "sss")), train_data=train, log=log,
                      progress=progress).fit()  # fmt: skip
    log("== dense baseline: same model and schedule, no factors ==")
    dense_cfg = dataclasses.replace(base, sparsity="none", out_dir=str(out / "dense"))
    dense_run = Trainer(dense_cfg, train_data=train, log=log, progress=progress).fit()
    log("== measuring on the test set ==")
    models = {"dense": dense_run.model, "SSS, before removal": sss_run.model, "SSS compact": sss_run.compact}
    rows = compare_models(models, test, latency_of=("dense", "SSS compact"), rounds=3 if quick else 7)
    with torch.no_grad():
        x = torch.from_numpy(test.images[:256]).float().div(255)
        x = (x - torch.tensor(test.mean).view(1, -1, 1, 1)) / torch.tensor(test.std).view(1, -1, 1, 1)
        gated_out, compact_out = sss_run.model.eval()(x), sss_run.compact.eval()(x)
    dense, compact = rows["dense"], rows["SSS compact"]
    report = {
        "config": dataclasses.asdict(base),
        "models": rows,
        "zero_factors": sum(g.num_zero for g in gates(sss_run.model)),
        "factors": len(gates(sss_run.model)),
        "mac_reduction": 1 - compact["macs"] / dense["macs"],
        "accuracy_gap_vs_dense": dense["accuracy"] - compact["accuracy"],
        "gated_vs_compact_accuracy_diff": rows["SSS, before removal"]["accuracy"] - compact["accuracy"],
        "gated_vs_compact_max_rel_diff": float((gated_out - compact_out).abs().max() / gated_out.abs().max()),
        "speedup": {b: dense["latency_ms"][b] / compact["latency_ms"][b] for b in ("1", "64")},
        "seconds": time.perf_counter() - start,
    }
    out.mkdir(parents=True, exist_ok=True)
    save(sss_run.compact, out / "compact")
    names = [g.name for g in gates(sss_run.model)]
    plot_factor_trace(sss_run.factor_trace, names, out / "factors.png")
    table = format_table(rows)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(table + "\n")
    log("\n" + table + "\n")
    log(
        f"{report['zero_factors']}/{report['factors']} blocks removed: {100 * report['mac_reduction']:.1f}% fewer "
        f"MACs, {report['speedup']['64']:.2f}x faster at batch 64, {report['accuracy_gap_vs_dense']:+.2f} points "
        f"below dense; removal changed test accuracy by {report['gated_vs_compact_accuracy_diff']:.2f} points."
    )
    log(f"saved {out / 'compact.safetensors'} (+ .json), {out / 'factors.png'}, {out / 'report.json'} "
        f"in {report['seconds']:.0f}s")  # fmt: skip
    return report
