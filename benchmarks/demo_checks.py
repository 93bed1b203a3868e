"""The checks shared by the benchmarks that run the demo recipe (bench_demo, bench_vgg_channels)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def check_and_save(report: dict, *, name: str, out_dir: str, min_mac_reduction: float, latency_factor: float) -> int:
    """Adds the PASS/FAIL checks and the machine to a ``run_demo`` report, writes
    ``results/NAME.json`` and ``NAME.md``, prints one line per check; returns the exit code.

    The checks: MACs reduced by at least ``min_mac_reduction``; test accuracy within 1 point of
    the dense model; removal exact (0.00 points); batch-64 speedup at least ``latency_factor``
    times the MAC ratio (dense MACs / compact MACs).
    """
    mac_ratio = 1 / (1 - report["mac_reduction"])
    checks = {
        f"MACs reduced by >= {100 * min_mac_reduction:.0f}%": report["mac_reduction"] >= min_mac_reduction,
        "accuracy within 1 point of dense": report["accuracy_gap_vs_dense"] <= 1.0,
        "removal changes accuracy by 0.00": abs(report["removal_accuracy_diff"]) < 0.005,
        f"batch-64 speedup >= {latency_factor} x MAC ratio": report["speedup"]["64"] >= latency_factor * mac_ratio,
    }
    report["mac_ratio"] = mac_ratio
    report["checks"] = checks
    report["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                         "torch": torch.__version__}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text((Path(out_dir) / "report.md").read_text())
    print(f"MAC ratio {mac_ratio:.2f}x, speedup b64 {report['speedup']['64']:.2f}x, b1 {report['speedup']['1']:.2f}x")
    for label, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0 if all(checks.values()) else 1
