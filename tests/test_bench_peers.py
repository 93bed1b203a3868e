"""The head-to-head benchmark's smoke version: every method runs once on a tiny schedule, and
the table, the equal-latency comparison and both figures come out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from bench_peers import at_latency  # noqa: E402
from peer_methods import METHODS  # noqa: E402


def test_accuracy_at_a_latency_interpolates_between_measured_points():
    curve = [(2.0, 90.0), (1.0, 80.0), (3.0, 91.0)]
    assert at_latency(curve, 1.5) == pytest.approx(85.0)
    assert at_latency(curve, 3.0) == pytest.approx(91.0)
    assert at_latency(curve, 0.5) is None  # the method never ran that fast


def test_every_method_runs_and_the_report_is_written(tmp_path):
    out, results = tmp_path / "runs", tmp_path / "results"
    cmd = [sys.executable, str(BENCHMARKS / "bench_peers.py"), "--quick", "--targets", "0.5", "--seeds", "0",
           "--out", str(out), "--results", str(results)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    report = json.loads((results / "peers.json").read_text())
    assert set(report["summary"]) == set(METHODS)
    for method, per in report["summary"].items():
        cell = per["0.5"]
        assert cell["n"] == 1 and 0 < cell["macs_fraction"]["mean"] < 1, method
        assert cell["b1_ms"]["mean"] > 0 and 0 <= cell["accuracy"]["mean"] <= 100
    sss_runs = [r for r in report["runs"] if r["method"] == "sss"]
    assert abs(sss_runs[0]["macs_fraction"] - 0.5) <= 0.02 * 0.5  # the sss budget lands in its band
    assert report["equal_latency"] and (results / "peers.md").read_text().count("\n| ") >= len(METHODS) + 1
    assert (results / "peers_accuracy_vs_macs.png").stat().st_size > 0
    assert (results / "peers_accuracy_vs_latency.png").stat().st_size > 0
    rerun = subprocess.run([*cmd, "--train-only"], check=True, capture_output=True, text=True, timeout=300)
    assert "method" not in rerun.stdout  # every run was already there: nothing trained again
