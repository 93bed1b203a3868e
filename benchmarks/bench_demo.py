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
import json
import platform
from pathlib import Path

import torch

from sss.cli.demo import run_demo

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench_demo")
    args = parser.parse_args()
    report = run_demo(args.out, baseline=True, progress=False)
    mac_ratio = 1 / (1 - report["mac_reduction"])
    checks = {
        "MACs reduced by >= 25%": report["mac_reduction"] >= 0.25,
        "accuracy within 1 point of dense": report["accuracy_gap_vs_dense"] <= 1.0,
        "removal changes accuracy by 0.00": abs(report["removal_accuracy_diff"]) < 0.005,
        "batch-64 speedup >= 0.9 x MAC ratio": report["speedup"]["64"] >= 0.9 * mac_ratio,
    }
    report["mac_ratio"] = mac_ratio
    report["checks"] = checks
    report["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                         "torch": torch.__version__}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "demo.md").write_text((Path(args.out) / "report.md").read_text())
    print(f"MAC ratio {mac_ratio:.2f}x, speedup b64 {report['speedup']['64']:.2f}x, b1 {report['speedup']['1']:.2f}x")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
