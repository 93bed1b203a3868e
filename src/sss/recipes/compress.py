"""``sss compress``: a trained model to a budget in one command (the trained-model workflow).

Starts from ``--init`` weights, selects for one epoch and lands on the target (the
trained-model steering, docs/design.md "From a trained model"), removes what it selected and
fine-tunes the compact model for the rest of ``--epochs``; then writes the compact model and a
report of the trained and the compact model side by side: test accuracy, MACs, params and
latency (``report.md``, ``report.json``) and the training curves (``curves.png``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sss.data import load_dataset
from sss.models import create
from sss.recipes.report import compare_models, format_table
from sss.serialization.weights import load_weights
from sss.train import TrainConfig, Trainer
from sss.viz.metrics import plot_metrics

#: What ``compress`` sets unless its flags, ``--config`` or ``--set`` say otherwise.
DEFAULTS = {"structures": ["channel"], "epochs": 4, "freeze_epoch": 1, "after_freeze": "continue", "lr": 0.01,
            "out_dir": "runs/compress"}  # fmt: skip


@dataclass
class CompressConfig(TrainConfig):
    """A :class:`TrainConfig` whose problems are said in ``compress``'s terms: compress sets
    ``freeze_epoch`` itself (one selection epoch), so ``--epochs 1`` is a problem of the epochs,
    not of a key the user never set. Same fields, so its checkpoints resume as any run's."""

    def cross_field_problems(self) -> list[str]:
        problems = super().cross_field_problems()
        if self.freeze_epoch == DEFAULTS["freeze_epoch"] and self.epochs <= self.freeze_epoch:
            problems = [p for p in problems if not p.startswith("freeze_epoch")]  # said below, in compress's terms
            problems.insert(0, f"epochs must be >= 2 for compress (one selection epoch, then at least one "
                               f"fine-tune epoch), got {self.epochs}")  # fmt: skip
        return problems


def run_compress(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, log=print) -> dict:
    """Runs the recipe for ``cfg`` (which must set ``init`` and a target); returns the report."""
    if not cfg.init:
        raise ValueError("compress starts from trained weights: give --init PATH")
    if cfg.target_macs is None and cfg.target_params is None and cfg.target_latency is None:
        raise ValueError("compress needs a budget: --target-macs, --target-params or --target-latency")
    result = Trainer(cfg, log=log).fit(resume=resume, overwrite=overwrite)
    test = load_dataset(cfg.dataset, False, cfg.data_dir, **cfg.dataset_options())
    trained = create(cfg.model, num_classes=test.num_classes, in_channels=test.shape[0], **cfg.model_kwargs)
    load_weights(trained, cfg.init, cfg.init_prefix)
    models = {"trained": trained.eval(), "compact": result.compact}
    rows = compare_models(models, test, latency_of=tuple(models))
    return write_report(rows, result.history, Path(cfg.out_dir), title=f"{cfg.model} from {cfg.init}: selection, "
                        "landing, fine-tune", log=log)  # fmt: skip


def write_report(rows: dict[str, dict], history: list[dict], out: Path, *, title: str, log=print) -> dict:
    """Writes ``report.json`` (the rows of :func:`~sss.recipes.report.compare_models` and the
    accuracy at the selection's end and after the landing), ``report.md`` (the table) and
    ``curves.png`` (the training curves) to ``out``; returns the report."""
    first = history[0]
    report = {"models": rows, "selection": {"val_acc_selection_end": first["val_acc"],
                                            "val_acc_after_landing": first.get("val_acc_landed")}}  # fmt: skip
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if rows:
        table = format_table(rows)
        (out / "report.md").write_text(table + "\n")
        log(table)
    plot_metrics(history, [("train_loss", "val_loss"), ("train_acc", "val_acc")], out / "curves.png", title=title)
    log(f"saved {out / 'compact.safetensors'} (+ .json), {out / 'report.json'}, {out / 'curves.png'}")
    return report
