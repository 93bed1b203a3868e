"""One small real-data run end to end: SSS on Fashion-MNIST, removal, the demo's report."""

import json

import pytest

import sss
from sss.recipes.demo import run_demo


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    return out, run_demo(out, quick=True, baseline=True, log=lines.append, progress=False), lines


def test_sss_removes_blocks_exactly_on_real_data(quick_demo):
    _, report, _ = quick_demo
    rows = report["models"]
    assert report["zero_factors"] >= 1
    # The demo states a target (70% of the dense MACs) and lands within ±2% of it.
    assert abs(rows["SSS after removal"]["macs"] / rows["dense"]["macs"] - 0.7) <= 0.02 * 0.7
    # Exact removal: the same predictions on all 10k test images, outputs equal to rounding.
    assert report["removal_accuracy_diff"] == 0.0
    assert report["removal_max_rel_diff"] <= 1e-5
    # A 4-epoch, 8k-image run of a width-8 ResNet-20 reaches ~76% (chance: 10%). The bar leaves
    # 16 points for another CPU's rounding to train another trajectory.
    assert rows["SSS after removal"]["accuracy"] >= 60.0
    assert rows["dense"]["accuracy"] >= 60.0


def test_demo_writes_its_artifacts(quick_demo):
    out, report, lines = quick_demo
    assert json.loads((out / "report.json").read_text())["zero_factors"] == report["zero_factors"]
    assert (out / "factors.png").stat().st_size > 10_000
    assert "| blocks per stage |" in (out / "report.md").read_text()
    compact = sss.load(out / "compact")
    assert sss.gates(compact) == []
    assert any("block/channel factors zero" in line for line in lines)
    assert any(line.startswith("budget: ") for line in lines)
    assert {"1", "64"} == set(report["models"]["SSS after removal"]["latency_ms"])
