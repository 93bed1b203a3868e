"""GAL vs SSS on ResNet-20, Fashion-MNIST (issue 4's first bar), in one table.

    .venv/bin/python benchmarks/bench_demo.py          # first: trains the dense teacher and SSS
    .venv/bin/python benchmarks/bench_gal_resnet.py [--gamma 0.6]

The teacher is the dense ResNet-20 that bench_demo.py trained (8 epochs on the demo's 30k
subset); SSS is that script's result on the same data. GAL trains block masks without
labels for GAL_EPOCHS, removes the zero blocks and fine-tunes (--finetune-epochs, --finetune-lr).
Bar: >= 30% fewer MACs, fine-tuned accuracy within 1 point of the teacher.
Writes benchmarks/results/gal_resnet.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from pathlib import Path

import torch

import sss
from sss.data import load_dataset
from sss.gal import GALConfig, GALTrainer
from sss.recipes.demo import DEMO_CONFIG
from sss.train import Trainer

RESULTS = Path(__file__).parent / "results"
GAL_EPOCHS = 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gamma", type=float, default=0.6)
    parser.add_argument("--freeze-epoch", type=int, default=None, help="end the mask selection after this epoch")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=0.01, help="peak of the cosine schedule")
    parser.add_argument("--demo", default="runs/bench_demo/seed0", help="where bench_demo.py left its runs")
    parser.add_argument("--out", default="runs/bench_gal_resnet")
    args = parser.parse_args()
    out, demo = Path(args.out), Path(args.demo)
    train, test = load_dataset("fashion-mnist", True), load_dataset("fashion-mnist", False)
    data = {"train_subset": DEMO_CONFIG.train_subset, "val_size": DEMO_CONFIG.val_size, "batch_size": 128}
    gal_cfg = GALConfig(model="resnet20", teacher=str(demo / "dense" / "model"), structures=["block"], **data,
                        epochs=GAL_EPOCHS, gamma=args.gamma, lr=0.01, freeze_epoch=args.freeze_epoch,
                        out_dir=str(out / "gal"))  # fmt: skip
    gal = GALTrainer(gal_cfg, train_data=train, progress=False).fit(overwrite=True)
    gated = gal.selected if gal.selected is not None else gal.model  # the gated student at removal
    g_acc, c_acc = sss.evaluate(gated, test)[0], sss.evaluate(sss.prune(gated), test)[0]
    ft_cfg = dataclasses.replace(DEMO_CONFIG, sparsity="none", freeze_epoch=None, target_macs=None,
                                 epochs=args.finetune_epochs, lr=args.finetune_lr,
                                 out_dir=str(out / "finetune"))  # fmt: skip
    student = copy.deepcopy(gal.compact).train()
    tuned = Trainer(ft_cfg, train_data=train, model=student, progress=False).fit(overwrite=True).model
    example = torch.zeros(1, 1, 28, 28)
    teacher = sss.load(demo / "dense" / "model")
    sss_final = sss.load(demo / "sss" / "compact")
    rows = {}
    for name, model in (("teacher (dense)", teacher), ("SSS", sss_final), ("GAL, after removal", gal.compact),
                        ("GAL + fine-tune", tuned)):  # fmt: skip
        macs, params = sss.count(model, example)
        acc = c_acc if name == "GAL, after removal" else sss.evaluate(model, test)[0]
        rows[name] = {"accuracy": acc, "macs": macs, "params": params}
    report = {
        "gamma": args.gamma,
        "freeze_epoch": args.freeze_epoch,
        "finetune_lr": args.finetune_lr,
        "budget_epochs": {
            "teacher": DEMO_CONFIG.epochs,
            "gal": GAL_EPOCHS,
            "finetune": args.finetune_epochs,
            "sss": DEMO_CONFIG.epochs,
        },
        "rows": rows,
        "gal_gated_accuracy": g_acc,
        "removed_blocks": sss.structures.removed_blocks(gal.compact),
        "mac_reduction": 1 - rows["GAL + fine-tune"]["macs"] / rows["teacher (dense)"]["macs"],
        "accuracy_loss": rows["teacher (dense)"]["accuracy"] - rows["GAL + fine-tune"]["accuracy"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gal_resnet.json").write_text(json.dumps(report, indent=2) + "\n")
    for name, row in rows.items():
        print(f"{name:20s} {row['accuracy']:6.2f}%  {row['macs'] / 1e6:6.2f}M MACs  {row['params'] / 1e3:6.1f}k params")
    checks = {"MACs reduced by >= 30%": report["mac_reduction"] >= 0.3,
              "fine-tuned within 1 point of the teacher": report["accuracy_loss"] <= 1.0,
              "removal exact": abs(g_acc - c_acc) < 0.005}  # fmt: skip
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
