"""The head-to-head benchmarks' smoke versions: one method of every code path of each track runs
once on a tiny schedule (Torch-Pruning's peers through its own pruners), the results file is a
list of records, and the table and both figures come out; a rerun trains nothing."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sss.train.plan import resolve_plan

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from h2h_report import CONTROLS, at_latency, best_against_peers, is_sss, markdown, summarise  # noqa: E402
from head_to_head import EARLIER, earlier_records, parse_override  # noqa: E402
from peer_methods import METHODS, QUICK, SCHEDULES, VIT_VARIANTS, fields_set_by  # noqa: E402
from tp_peers import TP_METHODS  # noqa: E402


def test_accuracy_at_a_latency_interpolates_between_measured_points():
    curve = [(2.0, 90.0), (1.0, 80.0), (3.0, 91.0)]
    assert at_latency(curve, 1.5) == pytest.approx(85.0)
    assert at_latency(curve, 3.0) == pytest.approx(91.0)
    assert at_latency(curve, 0.5) is None  # the method never ran that fast


def test_latency_is_averaged_over_this_pass_only():
    """Kept records' latency came from another pass on a drifting machine: a cell averages the
    latency of the runs timed now, and the accuracy of all."""
    base = {"method": "tp-l1", "target": 0.5, "accuracy_after_cut": 10.0, "macs_fraction": 0.5, "params": 1,
            "seconds": 1.0, "b64_ms": 10.0}  # fmt: skip
    rows = [{**base, "accuracy": 90.0, "b1_ms": 1.0}, {**base, "accuracy": 88.0, "b1_ms": 3.0, EARLIER: True}]
    cell = summarise(rows)["tp-l1"][0.5]
    assert cell["b1_ms"]["mean"] == 1.0 and cell["accuracy"]["mean"] == 89.0
    assert cell["n"] == 2 and cell["n_timed"] == 1
    dense = {k: {"mean": 1.0, "std": 0.0} for k in ("accuracy", "b1_ms", "b64_ms", "seconds")} | {"n": 1}
    assert "| tp-l1 | 0.5 | 2 (1 timed) |" in markdown(summarise(rows), dense, "cpu", "test", kept=1)


def test_the_best_peer_excludes_the_controls():
    def cell(acc):
        return {0.5: {"accuracy": {"mean": acc}, "n": 5}}

    rows = best_against_peers({"sss": cell(90.0), "tp-l1": cell(89.5), "uniform": cell(95.0)})
    assert rows[0]["peer"] == "tp-l1" and rows[0]["ahead"] == pytest.approx(0.5)
    assert rows[0]["control"] == "uniform"


def test_earlier_records_are_kept_unless_rerun_or_forgotten(tmp_path):
    """A grid filled over several sessions: records whose run folders are gone stay in the results,
    except where a run folder holds the same run, for a method named by ``--forget``, and dense."""

    def rec(method, seed, accuracy=90.0):
        return {"method": method, "target": 0.5, "seed": seed, "accuracy": accuracy}

    path = tmp_path / "pretrained.json"
    path.write_text(json.dumps([rec("tp-l1", 0), rec("tp-l1", 1), rec("sss", 0), rec("dense", 0)]))
    folders = [rec("tp-l1", 1, 91.0)]
    kept = [{**rec("tp-l1", 0), EARLIER: True}, {**rec("sss", 0), EARLIER: True}]
    assert earlier_records(path, folders, []) == kept
    assert earlier_records(path, folders, ["sss"]) == kept[:1]
    assert earlier_records(path, folders, ["all"]) == []
    assert earlier_records(tmp_path / "none.json", folders, []) == []


#: One method of each code path (sss, sss with distillation, a one-shot, a gradient and a sparse
#: Torch-Pruning peer, a peer with distillation, a control, GAL): the whole grid would take the
#: default suite's time; every method's path is one of these.
SMOKE = {"scratch": ["sss", "tp-l1", "tp-taylor", "tp-slimming", "random"],
         "trained": ["sss", "sss+kd", "tp-taylor", "tp-group-sl", "tp-l1+kd", "uniform", "gal"],
         "vit": ["sss+kd", "tp-vit+kd"], "vit-timm": ["sss-rank+kd", "tp-vit+kd", "uniform"]}  # fmt: skip


def _code_paths(method: str) -> set[str]:
    """The branches of ``run_method`` (and of ``TPTrainer``) that ``method`` goes through."""
    base, kd = method.removesuffix("+kd"), method.endswith("+kd")
    if is_sss(method):
        return {"sss", *(["kd:sss"] if kd else [])}
    if base in TP_METHODS:
        spec = TP_METHODS[base]
        kind = "heads" if spec.heads else "sparse" if spec.sparse else "one-shot"
        kind = "gradients" if spec.needs_gradients else kind
        return {f"tp:{kind}", *(["kd:tp"] if kd else [])}
    return {"control" if base in CONTROLS else base}


def test_set_reads_a_config_field_and_its_value():
    assert parse_override("factor_floor=0.01") == ("factor_floor", 0.01)
    assert parse_override("model_kwargs={width: 8}") == ("model_kwargs", {"width": 8})
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        parse_override("factor_floor")
    with pytest.raises(SystemExit, match="no field 'floor'"):
        parse_override("floor=0.01")
    assert "keep_fraction" in fields_set_by(["sss-kept+kd"], "vit-timm")  # the variant sets it: --set is overridden
    assert "keep_fraction" not in fields_set_by(["sss-scaled", "uniform"], "vit-timm")
    assert "freeze_epoch" not in fields_set_by(["sss-scaled", "sss-kept+kd"], "vit-timm")  # sss takes the schedule's
    assert "freeze_epoch" in fields_set_by(["sss-scaled", "uniform"], "vit-timm")  # the control trains without one
    assert "freeze_epoch" in fields_set_by(["sss"], "scratch")  # from scratch sss sets its own
    dataclasses.replace(SCHEDULES["vit-timm"], keep_fraction=0.5).validate()  # the sweep's --set keep_fraction=K


def test_every_vit_variant_is_a_valid_config_whose_selection_takes_a_step():
    for name, variant in VIT_VARIANTS.items():
        for schedule in (SCHEDULES["vit-timm"], QUICK["vit-timm"]):
            cfg = dataclasses.replace(schedule, **variant, init="dense", target_macs=0.3)
            cfg.validate()
            train_size = cfg.train_subset - cfg.val_size
            assert resolve_plan(cfg, train_size).selection_steps >= 1, name  # sss-kept-short: 4 of 78, 1 of 14


def test_the_smoke_methods_cover_every_code_path_of_their_track():
    for track, methods in METHODS.items():
        assert set(SMOKE[track]) <= set(methods)
        assert set().union(*map(_code_paths, SMOKE[track])) == set().union(*map(_code_paths, methods)), track


#: The default suite's share of the smoke runs: the ViT track with sss and Torch-Pruning, both
#: distilled (the shared driver, both peers' code, the report and figures: 54 s on 2 cores); every
#: code path of every track (SMOKE: 4 more minutes) runs with ``-m slow``.
SMOKE_DEFAULT = ["sss+kd", "tp-vit+kd"]
_TRACKS = [("bench_peers.py", "peers", "scratch"), ("bench_pretrained.py", "pretrained", "trained"),
           ("bench_vit.py", "vit", "vit"), ("bench_vit_timm.py", "vit_timm", "vit-timm")]  # fmt: skip


def test_the_methods_run_and_the_report_is_written(tmp_path):
    _smoke(tmp_path, "bench_vit.py", "vit", "vit", SMOKE_DEFAULT)


@pytest.mark.slow
@pytest.mark.parametrize(("script", "name", "track"), _TRACKS)
def test_every_code_path_of_a_track_runs(tmp_path, script, name, track):
    if track == "vit-timm":
        pytest.importorskip("timm")
    _smoke(tmp_path, script, name, track, SMOKE[track])


def _smoke(tmp_path, script: str, name: str, track: str, methods: list[str]) -> None:
    out, results = tmp_path / "runs", tmp_path / "results"
    cmd = [sys.executable, str(BENCHMARKS / script), "--quick", "--targets", "0.5", "--seeds", "0", "--out", str(out),
           "--dense", str(tmp_path / "dense"), "--results", str(results), "--methods", *methods]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    records = json.loads((results / f"{name}.json").read_text())
    assert {r["method"] for r in records} == {*methods, "dense"}
    for r in records:
        assert {"method", "target", "seed", "accuracy", "macs_fraction", "b1_ms", "b64_ms"} <= r.keys()
        if r["method"] != "dense":
            assert 0 < r["macs_fraction"] < 0.55 and 0 <= r["accuracy"] <= 100, r
            assert r["commit"]
    sss_run = next(r for r in records if is_sss(r["method"]))
    assert abs(sss_run["macs_fraction"] - 0.5) <= 0.02 * 0.5  # the sss budget lands in its band
    tp_run = next(r for r in records if r["method"] in ("tp-group-sl", "tp-slimming", "tp-vit+kd"))
    assert tp_run["macs_fraction"] <= 0.5  # Torch-Pruning stepped until the target was met
    table = (results / f"{name}.md").read_text()
    assert table.count("\n| ") >= len(methods) + 1 and "sss ahead by" in table
    assert (results / f"{name}_accuracy_vs_macs.png").stat().st_size > 0
    assert (results / f"{name}_accuracy_vs_latency.png").stat().st_size > 0
    rerun = subprocess.run([*cmd, "--train-only"], check=True, capture_output=True, text=True, timeout=300)
    assert "method" not in rerun.stdout  # every run was already there: nothing trained again
