"""Latency targets on this machine: does the compact model end at or under the target?

    .venv/bin/python benchmarks/bench_latency_target.py [--out runs/bench_latency]

ResNet-20 with block + channel factors, the head-to-head's split (12k images, 2k held out),
a one-epoch selection aimed at a fraction of the dense model's latency (``target_latency:
0.6x`` at batch 1, 0.8x at batch 1, 0.7x at batch 64: the run calibrates and checks against
the dense model timed in the same passes), then one epoch of the compact model. Afterwards the
compact model is timed again, independently, interleaved with the dense model (7 rounds), and
its share of the dense latency is divided by the fraction asked for: at or under 1.03 is on
target (the timing noise allowed by the landing). Writes results/latency_target.json and .md.
A relative target cancels a drift of the machine's speed; an idle machine still times best.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

import sss
from sss.data import load_dataset
from sss.models import create
from sss.recipes.demo import DEMO_CONFIG
from sss.train import Trainer

PEER_CONFIG = dataclasses.replace(DEMO_CONFIG, train_subset=12_000, val_size=2_000, after_freeze="rewind")

RESULTS = Path(__file__).parent / "results"
TARGETS = ((1, 0.6), (1, 0.8), (64, 0.7))  # (batch, fraction of the dense model's latency)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench_latency")
    args = parser.parse_args()
    train, test = load_dataset("fashion-mnist", True), load_dataset("fashion-mnist", False)
    dense, example = create("resnet20", num_classes=10, in_channels=1), torch.zeros(1, *test.shape)
    rows = []
    for batch, fraction in TARGETS:
        cfg = dataclasses.replace(PEER_CONFIG, epochs=2, freeze_epoch=1, target_macs=None,
                                  target_latency=f"{fraction}x", latency_batch=batch,
                                  out_dir=f"{args.out}/b{batch}_{fraction}")  # fmt: skip
        lines: list[str] = []
        result = Trainer(cfg, train_data=train, log=lines.append, progress=False).fit(overwrite=True)
        timed = sss.compare_latency({"dense": dense, "compact": result.compact}, test.shape, (batch,), rounds=7)
        share = timed["compact"][batch] / timed["dense"][batch]
        fit = next(line for line in lines if line.startswith("latency model"))
        rows.append({"batch": batch, "fraction": fraction, "dense_ms": timed["dense"][batch],
                     "compact_ms": timed["compact"][batch], "share": share, "ratio": share / fraction,
                     "macs_fraction": sss.count(result.compact, example)[0] / sss.count(dense, example)[0],
                     "fit": fit, "landing": [line for line in lines if line.startswith("budget")]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latency_target.json").write_text(json.dumps({"device": sss.measure.device_name("cpu"),
                                                             "runs": rows}, indent=2) + "\n")  # fmt: skip
    lines = ["| batch | target | dense ms | compact ms | compact / dense | ÷ target | MACs / dense |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['batch']} | {r['fraction']}x | {r['dense_ms']:.2f} | {r['compact_ms']:.2f} | {r['share']:.3f} | "
              f"{r['ratio']:.3f} | {r['macs_fraction']:.3f} |" for r in rows]  # fmt: skip
    (RESULTS / "latency_target.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["ratio"] <= 1.03 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
