"""The head-to-head's driver, for both tracks (bench_peers.py: from scratch; bench_pretrained.py:
from a trained model): runs the grid method × target × seed, one folder per run, then times
every model together and writes the results file, the table and two figures.

Each run leaves ``OUT/<method>_<target>_s<seed>/row.json`` (with the commit it ran at) and its
compact model; a rerun skips the runs already there, so the grid fills over several calls.
Latency is timed at the end for every model together (interleaved rounds, batch 1 and 64), so a
busy machine during training does not bias one method.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
from pathlib import Path

import numpy as np
import torch
import yaml

import sss
import timm_vit
from h2h_report import EARLIER, markdown, plot, summarise
from peer_methods import DENSE, FROM_TRAINED, METHODS, QUICK, SCHEDULES, fields_set_by, timed_run, train_dense
from sss.data import load_dataset
from sss.train import TrainConfig

RESULTS = Path(__file__).parent / "results"
NAMES = {"scratch": "peers", "trained": "pretrained", "vit": "vit", "vit-timm": "vit_timm"}
TITLES = {"scratch": "from scratch", "trained": "from a trained model", "vit": "from a trained model",
          "vit-timm": "from a trained model"}  # fmt: skip
MODELS = {"resnet20": "ResNet-20", "vit_fmnist": "ViT (vit_fmnist)",
          timm_vit.MODEL: "timm ViT-Tiny (vit_tiny_patch16_224 at 28×28, 7×7 patches)"}  # fmt: skip


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def trained_dense(track: str, folder: Path, train, quick: bool) -> Path:
    """The trained model of a trained-model track (once, shared by its seeds), built by
    ``DENSE[track]``; narrow and short with ``quick``."""
    path = folder / "model"
    if not path.with_suffix(".json").exists():
        DENSE[track](folder, train, quick)
    return path


def _dense_row(track: str, folder: Path, model: torch.nn.Module, test, example) -> dict:
    seconds = sum(json.loads(line)["seconds"] for line in (folder / "metrics.jsonl").open() if line.strip())
    return {
        "method": "dense",
        "track": track,
        "target": 1.0,
        "seed": 0,
        "accuracy": sss.evaluate(model, test)[0],
        "macs": sss.count(model, example)[0],
        "params": sss.count(model, example)[1],
        "seconds": seconds,
    }


def earlier_records(path: Path, rows: list[dict], forget: list[str]) -> list[dict]:
    """The records of an earlier results file whose run folders are gone (another machine, a
    cleaned ``runs/``): kept as they are, marked ``EARLIER`` (their latency is from the pass that
    timed them then, and the tables average latency over this pass's timings only), unless a
    run folder holds the same (method, target, seed) or ``forget`` names the method (``all``:
    every one). Dense rows are always rebuilt."""
    if not path.exists():
        return []
    done = {(r["method"], r["target"], r["seed"]) for r in rows}
    return [{**r, EARLIER: True} for r in json.loads(path.read_text())
            if r["method"] != "dense" and (r["method"], r["target"], r["seed"]) not in done
            and "all" not in forget and r["method"] not in forget]  # fmt: skip


def main(track: str, doc: str, *, targets: tuple[float, ...] = (0.3, 0.5, 0.7),
         seeds: tuple[int, ...] = (0, 1, 2, 3, 4)) -> None:  # fmt: skip
    methods = METHODS[track]
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=float, nargs="+", default=list(targets))
    p.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    p.add_argument("--methods", nargs="+", choices=methods, default=methods)
    p.add_argument("--out", type=Path, default=Path(f"runs/bench_{NAMES[track]}"))
    p.add_argument(
        "--dense",
        type=Path,
        default=Path(f"runs/bench_{NAMES[track]}/dense"),
        help="trained-model tracks: where the trained model is (trained there if missing)",
    )
    p.add_argument("--report-only", action="store_true", help="only time and summarise the runs already done")
    p.add_argument("--train-only", action="store_true", help="train the missing runs, then stop (no timing)")
    p.add_argument("--quick", action="store_true", help="the smoke version: narrow net, 1.2k images, 1k to test")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the results, table and figures go")
    p.add_argument(
        "--forget",
        nargs="*",
        default=[],
        metavar="METHOD",
        help="drop these methods' earlier records (kept otherwise; 'all' drops every one)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a TrainConfig field for every run (e.g. factor_floor=0.01); use with --out and --results "
        "elsewhere, so the variant's records stay apart from the track's",
    )
    args = p.parse_args()
    overrides = dict(parse_override(item) for item in args.set)
    if taken := sorted(set(overrides) & fields_set_by(args.methods, track)):
        p.error(f"--set {', '.join(taken)}: the methods set these fields themselves (peer_methods.py)")
    cfg = dataclasses.replace(QUICK[track] if args.quick else SCHEDULES[track], **overrides)
    cfg.validate()
    train, test = load_dataset("fashion-mnist", True), load_dataset("fashion-mnist", False)
    if args.quick:  # the smoke version scores on 1k test images
        test = test.subset(np.arange(1000))
    example = torch.zeros(1, *test.shape)
    dense_path = trained_dense(track, args.dense, train, args.quick) if track in FROM_TRAINED else None
    here = commit()
    order = [(s, t, m) for s in args.seeds for t in args.targets for m in args.methods]
    for seed, target, method in [] if args.report_only else order:
        if track == "scratch" and not (args.out / f"dense_s{seed}" / "row.json").exists():
            dense = train_dense(cfg, seed, args.out / f"dense_s{seed}", train)
            row = {**_dense_row(track, args.out / f"dense_s{seed}", dense, test, example), "seed": seed, "commit": here}
            (args.out / f"dense_s{seed}" / "row.json").write_text(json.dumps(row) + "\n")
        folder = args.out / f"{method}_{target}_s{seed}"
        if not (folder / "row.json").exists():
            row = timed_run(track, cfg, method, target, seed, folder, train, test, dense_path, here)
            row = {**row, "set": overrides} if overrides else row
            (folder / "row.json").write_text(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    if args.train_only:
        return
    report(track, args, cfg, dense_path, test, example)


def parse_override(item: str) -> tuple[str, object]:
    """``"name=value"`` as ``(name, value)``, the value read as YAML (``0.01`` a float)."""
    name, sep, value = item.partition("=")
    if not sep:
        raise SystemExit(f"--set takes FIELD=VALUE, got {item!r}")
    if name.strip() not in {f.name for f in dataclasses.fields(TrainConfig)}:
        raise SystemExit(f"--set {item!r}: TrainConfig has no field {name.strip()!r} (docs: sss.train.TrainConfig)")
    return name.strip(), yaml.safe_load(value)


def report(track: str, args, cfg, dense_path: Path | None, test, example) -> None:
    """Times every model of the track together, then writes ``<name>.json`` (a list of records),
    ``<name>.md`` and the two figures."""
    folders = sorted(p.parent for p in args.out.glob("*/row.json"))
    rows = [json.loads((f / "row.json").read_text()) for f in folders]
    earlier = earlier_records(args.results / f"{NAMES[track]}.json", rows, args.forget)
    trust = cfg.trusted_code  # the track's own model factory (a benchmark's import path)
    models = {f.name: sss.load(f / ("model" if f.name.startswith("dense") else "compact"), trust_code=trust)
              for f in folders}  # fmt: skip
    if dense_path is not None:
        models["dense"] = sss.load(dense_path, trust_code=trust)
        rows.append(_dense_row(track, dense_path.parent, models["dense"], test, example))
        folders.append(Path("dense"))
    latency = sss.compare_latency(models, test.shape, (1, 64), rounds=5)
    for f, r in zip(folders, rows, strict=True):
        r["b1_ms"], r["b64_ms"] = latency[f.name][1], latency[f.name][64]
    rows += earlier
    dense_macs = {r["seed"]: r["macs"] for r in rows if r["method"] == "dense"}
    for r in rows:
        r["macs_fraction"] = r["macs"] / dense_macs.get(r["seed"], dense_macs.get(0))
    dense_rows = [r for r in rows if r["method"] == "dense"]
    keys = ("accuracy", "b1_ms", "b64_ms", "seconds", "macs_fraction")
    dense = {
        k: {
            "mean": statistics.mean(r[k] for r in dense_rows),
            "std": statistics.stdev([r[k] for r in dense_rows]) if len(dense_rows) > 1 else 0.0,
        }
        for k in keys
    }
    dense["n"] = len(dense_rows)
    table = summarise([r for r in rows if r["method"] != "dense"])
    device = sss.measure.device_name("cpu")
    name = NAMES[track]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    schedule = f"{MODELS.get(cfg.model, cfg.model)}, Fashion-MNIST, {TITLES[track]}, {cfg.epochs} epochs per method"
    (args.results / f"{name}.md").write_text(markdown(table, dense, device, schedule, kept=len(earlier)))
    plot(table, dense, "macs_fraction", "MACs / dense MACs", args.results / f"{name}_accuracy_vs_macs.png", schedule)
    plot(table, dense, "b1_ms", f"batch-1 latency (ms), {device}", args.results / f"{name}_accuracy_vs_latency.png",
         schedule)  # fmt: skip
    print((args.results / f"{name}.md").read_text())
