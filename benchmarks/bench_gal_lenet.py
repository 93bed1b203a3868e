"""GAL on LeNet-5, Fashion-MNIST: the bar of issue 4 (>= 50% fewer MACs at <= 1 point loss).

    .venv/bin/python benchmarks/bench_gal_lenet.py [--gamma 0.05] [--out runs/bench_gal_lenet]

1. A dense LeNet-5 teacher: `sss train --model lenet5 --sparsity none` (TEACHER_EPOCHS).
2. GAL with channel/neuron masks, no labels (GAL_EPOCHS).
3. Removal of the zero-mask channels (exact), then fine-tuning with labels (FINETUNE_EPOCHS).
Writes benchmarks/results/gal_lenet.json and prints PASS/FAIL against the bar.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

import sss
from sss.data import load_dataset
from sss.gal import GALConfig, GALTrainer
from sss.train import TrainConfig, Trainer

RESULTS = Path(__file__).parent / "results"
TEACHER_EPOCHS, GAL_EPOCHS, FINETUNE_EPOCHS = 8, 4, 4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gamma", type=float, default=0.05)
    parser.add_argument("--out", default="runs/bench_gal_lenet")
    args = parser.parse_args()
    out = Path(args.out)
    train, test = load_dataset("fashion-mnist", True), load_dataset("fashion-mnist", False)
    common = {"model": "lenet5", "val_size": 5000, "batch_size": 128, "augment_pad": 0, "channels_last": False}
    teacher_cfg = TrainConfig(**common, sparsity="none", epochs=TEACHER_EPOCHS, lr=0.05, out_dir=str(out / "teacher"))
    teacher = Trainer(teacher_cfg, train_data=train, progress=False).fit(overwrite=True).model
    gal_cfg = GALConfig(**common, teacher=str(out / "teacher" / "model"), structures=["channel"], epochs=GAL_EPOCHS,
                        gamma=args.gamma, lr=0.01, out_dir=str(out / "gal"))  # fmt: skip
    gal = GALTrainer(gal_cfg, train_data=train, progress=False).fit(overwrite=True)
    g_acc, c_acc = sss.evaluate(gal.model, test)[0], sss.evaluate(gal.compact, test)[0]  # before fine-tuning
    ft_cfg = TrainConfig(**common, sparsity="none", epochs=FINETUNE_EPOCHS, lr=0.01, out_dir=str(out / "finetune"))
    student = copy.deepcopy(gal.compact).train()
    tuned = Trainer(ft_cfg, train_data=train, model=student, progress=False).fit(overwrite=True).model
    example = torch.zeros(1, 1, 28, 28)
    t_acc, (t_macs, t_params) = sss.evaluate(teacher, test)[0], sss.count(teacher, example)
    f_acc, (f_macs, f_params) = sss.evaluate(tuned, test)[0], sss.count(tuned, example)
    report = {
        "gamma": args.gamma, "epochs": {"teacher": TEACHER_EPOCHS, "gal": GAL_EPOCHS, "finetune": FINETUNE_EPOCHS},
        "teacher": {"accuracy": t_acc, "macs": t_macs, "params": t_params},
        "gal_gated_accuracy": g_acc, "gal_compact_accuracy": c_acc,
        "finetuned": {"accuracy": f_acc, "macs": f_macs, "params": f_params},
        "layer_widths": {n: [m.in_features, m.out_features] for n, m in tuned.named_modules()
                         if isinstance(m, torch.nn.Linear)},
        "mac_reduction": 1 - f_macs / t_macs, "accuracy_loss": t_acc - f_acc,
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gal_lenet.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    checks = {"MACs reduced by >= 50%": report["mac_reduction"] >= 0.5, "accuracy loss <= 1 point": report[
        "accuracy_loss"] <= 1.0, "removal exact": abs(g_acc - c_acc) < 0.005}  # fmt: skip
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
