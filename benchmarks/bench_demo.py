"""The demo's bar: run `sss demo` in full and check the issue's targets.

    .venv/bin/python benchmarks/bench_demo.py [--out runs/bench_demo]

Runs the demo with its dense baseline (same model, same schedule, no factors) and
writes benchmarks/results/demo.json (the figures quoted in the README) and prints one
PASS/FAIL line per target:
- the compact model has >= 25% fewer MACs than the dense one;
- its test accuracy is within 1 point of a dense model trained with the same schedule;
- removal changes test accuracy by 0.00 points;
- latency speedup at batch 64 >= 0.9 x the MAC reduction (dense MACs / compact MACs).
"""

from __future__ import annotations

import argparse

from demo_checks import check_and_save
from sss.cli.demo import run_demo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench_demo")
    args = parser.parse_args()
    report = run_demo(args.out, baseline=True, progress=False)
    return check_and_save(report, name="demo", out_dir=args.out, min_mac_reduction=0.25, latency_factor=0.9)


if __name__ == "__main__":
    raise SystemExit(main())
