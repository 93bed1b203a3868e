"""Channel selection on a real dataset: VGG-16-BN with channel factors on Fashion-MNIST.

    .venv/bin/python benchmarks/bench_vgg_channels.py --gamma 0.003 --freeze-epoch 2
    .venv/bin/python benchmarks/bench_vgg_channels.py --gamma 0.002 --freeze-epoch 2 \
        --gamma-macs-power 1 --out runs/bench_vgg_macs --name vgg_channels_macs

Trains a half-width VGG-16-BN (67M MACs at 28x28) with one factor per channel and, on the
same schedule and data, a dense one; removes the zero channels (counts rounded to a multiple
of 8, which CPU kernels prefer) and writes benchmarks/results/NAME.json, the figures in the
README (the first command: uniform γ; the second: γ weighted by MACs per channel). The
recipe is the demo's with the selection frozen after epoch 2: the compact model is rewound
and trained for the remaining 6 epochs (docs/design.md, "channel selection").
Targets (issue 3), one PASS/FAIL line each:
- >= 40% fewer MACs than the dense model;
- test accuracy within 1 point of the dense model trained with the same schedule;
- removal changes test accuracy by 0.00 points;
- batch-64 latency speedup >= 0.8 x the MAC ratio (dense MACs / compact MACs).
"""

from __future__ import annotations

import argparse
import dataclasses

from demo_checks import check_and_save
from sss.recipes.demo import DEMO_CONFIG, run_demo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench_vgg")
    parser.add_argument("--gamma", type=float, default=0.003)
    parser.add_argument("--freeze-epoch", type=int, default=2)
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--gamma-macs-power", type=float, default=0.0, help="scale γ by (MACs per channel)^p")
    parser.add_argument("--name", default="vgg_channels", help="results file stem in benchmarks/results/")
    args = parser.parse_args()
    config = dataclasses.replace(
        DEMO_CONFIG, model="vgg16_bn", model_kwargs={"width": 0.5}, structures=["channel"], gamma=args.gamma,
        target_macs=None,  # this benchmark measures the γ recipe (results/vgg_channels*.json)
        freeze_epoch=args.freeze_epoch, round_to=args.round_to, gamma_macs_power=args.gamma_macs_power,
    )  # fmt: skip
    report = run_demo(args.out, config=config, baseline=True, progress=False)
    return check_and_save(report, name=args.name, out_dir=args.out, min_mac_reduction=0.4, latency_factor=0.8)


if __name__ == "__main__":
    raise SystemExit(main())
