"""From a trained model to a budget, sss alone over a grid (issue "Prune the model you already trained").

A dense ResNet-20 is trained with the demo's data and schedule (8 cosine epochs, 25k/5k
Fashion-MNIST split) and saved; then every run starts from those weights (``init``) and gets
the same short fine-tune: ``epochs`` in all, the selection in the first (``freeze_epoch=1``,
``after_freeze=continue``), at a fine-tuning learning rate. Grid: kinds (channels only, blocks +
channels) × MAC targets × learning rates. For every run: test accuracy at the last epoch,
validation accuracy at the end of the selection epoch and right after the landing (the cliff),
MACs as a fraction of dense, whether the landing was inside ±2% on the first try, and the
largest relative output difference between the gated model at the freeze and its compact form.

    python benchmarks/bench_pretrained_grid.py                     # the full grid (about 40 min on 2 cores)
    python benchmarks/bench_pretrained_grid.py --targets 0.5 --lrs 0.01 --kinds channel   # one cell

Runs are kept in ``--out`` (one folder each, with a ``record.json``): a finished run is not run
again, so the grid can be filled over several calls. Results: ``--results``/pretrained_grid.json
(one record per run, with the commit it ran at) and pretrained_grid.md. The head-to-head from the
same trained model, against Torch-Pruning: bench_pretrained.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import time
from pathlib import Path

import torch

import sss
from sss.data import load_dataset
from sss.measure import evaluate
from sss.recipes.demo import DEMO_CONFIG
from sss.train import Trainer

KINDS = {"channel": ["channel"], "block,channel": ["block", "channel"]}
NAMES = {"channel": "sss-channels", "block,channel": "sss"}


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def dense_model(out: Path, train, epochs: int, train_subset: int | None) -> Path:
    """Trains (once) the dense model every run starts from; returns its saved path."""
    path = out / "dense" / "model"
    if not path.with_suffix(".safetensors").exists():
        cfg = dataclasses.replace(DEMO_CONFIG, sparsity="none", target_macs=None, freeze_epoch=None,
                                  after_freeze="continue", epochs=epochs, train_subset=train_subset,
                                  out_dir=str(out / "dense"))  # fmt: skip
        Trainer(cfg, train_data=train, progress=False).fit(overwrite=True)
    return path


def run_one(out: Path, init: Path, train, test, kinds: str, target: float, lr: float, args) -> dict:
    folder = out / f"{NAMES[kinds]}_t{target}_lr{lr}"
    if (folder / "record.json").exists():
        return json.loads((folder / "record.json").read_text())
    cfg = dataclasses.replace(
        DEMO_CONFIG, structures=KINDS[kinds], gamma=args.gamma, target_macs=target, init=str(init),
        epochs=args.epochs, freeze_epoch=1, after_freeze="continue", lr=lr, train_subset=args.train_subset,
        distill=args.distill, out_dir=str(folder),
    )  # fmt: skip
    lines: list[str] = []
    start = time.perf_counter()
    try:
        result = Trainer(cfg, train_data=train, log=lines.append, progress=False).fit(overwrite=True)
    except sss.SSSError as e:
        record = {"method": NAMES[kinds], "target": target, "lr": lr, "error": str(e)}
    else:
        selected = result.selected
        x = torch.randn(64, *test.shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            a, b = selected.eval()(x), sss.prune(selected).eval()(x)
        first = result.history[0]
        macs = sss.count(result.compact, torch.zeros(1, *test.shape))[0]
        dense_macs = first["dense_macs"]
        landing = [line for line in lines if line.startswith("budget:")]
        record = {
            "method": NAMES[kinds] + ("+kd" if args.distill else ""), "target": target, "lr": lr,
            "seed": cfg.seed, "accuracy": evaluate(result.compact, test)[0],
            "val_acc_selection_end": first["val_acc"], "val_acc_after_landing": first.get("val_acc_landed"),
            "macs_fraction": macs / dense_macs, "landed_first_try": bool(landing) and "NOT" not in landing[0],
            "removal_max_rel_diff": float((a - b).abs().max() / a.abs().max()),
            "wall_s": time.perf_counter() - start, "commit": commit(), "log": landing,
        }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "record.json").write_text(json.dumps(record, indent=1))
    return record


def report(records: list[dict], dense_acc: float, path: Path) -> None:
    rows = [
        "| method | target | lr | test accuracy | val at selection end | val after landing | cliff | MACs / dense "
        "| landed ±2% first try | removal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r["method"], r["target"], -r["lr"])):
        if "error" in r:
            rows.append(f"| {r['method']} | {r['target']} | {r['lr']} | error: {r['error'][:80]} | | | | | | |")
            continue
        cliff = r["val_acc_selection_end"] - r["val_acc_after_landing"]
        rows.append(f"| {r['method']} | {r['target']} | {r['lr']} | {r['accuracy']:.2f}% | "
                    f"{r['val_acc_selection_end']:.2f}% | {r['val_acc_after_landing']:.2f}% | {cliff:+.2f} | "
                    f"{r['macs_fraction']:.3f} | {'yes' if r['landed_first_try'] else 'no'} | "
                    f"{r['removal_max_rel_diff']:.1e} |")  # fmt: skip
    path.write_text(f"Trained dense ResNet-20: {dense_acc:.2f}% test accuracy.\n\n" + "\n".join(rows) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench_pretrained"))
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.001])
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--epochs", type=int, default=4, help="epochs after the trained model (selection included)")
    p.add_argument("--dense-epochs", type=int, default=DEMO_CONFIG.epochs)
    p.add_argument("--train-subset", type=int, default=DEMO_CONFIG.train_subset)
    p.add_argument("--gamma", type=float, default=0.01, help="one γ for every kind (the steering scales it)")
    p.add_argument("--distill", type=float, default=None, help="distil from the trained model at this temperature")
    p.add_argument("--name", default="pretrained_grid", help="results file stem")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train, test = load_dataset("fashion-mnist", True), load_dataset("fashion-mnist", False)
    init = dense_model(args.out, train, args.dense_epochs, args.train_subset)
    dense_acc = evaluate(sss.load(init), test)[0]
    print(f"trained dense model {init}: {dense_acc:.2f}% test accuracy", flush=True)
    records = []
    for kinds in args.kinds:
        for target in args.targets:
            for lr in args.lrs:
                r = run_one(args.out, init, train, test, kinds, target, lr, args)
                records.append(r)
                print(json.dumps({k: v for k, v in r.items() if k != "log"}), flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    results = args.results / f"{args.name}.json"
    kept = [
        r
        for r in (json.loads(results.read_text()) if results.exists() else [])
        if (r["method"], r["target"], r["lr"]) not in {(x["method"], x["target"], x["lr"]) for x in records}
    ]
    all_records = kept + records
    results.write_text(json.dumps([{k: v for k, v in r.items() if k != "log"} for r in all_records], indent=1) + "\n")
    report(all_records, dense_acc, args.results / f"{args.name}.md")
    print(f"wrote {results} and {args.results / f'{args.name}.md'}")


if __name__ == "__main__":
    main()
