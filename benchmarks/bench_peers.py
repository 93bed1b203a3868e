"""Head-to-head at equal MACs and at equal latency: SSS against network slimming, L1-norm filter
pruning and GAL (the methods and their shared schedule: peer_methods.py).

    .venv/bin/python benchmarks/bench_peers.py [--targets 0.3 0.5 0.7] [--seeds 0 1 2]
        [--methods sss sss-blocks sss-channels slimming l1 gal] [--out runs/bench_peers]
        [--train-only | --report-only]

Each run leaves ``OUT/<method>_<target>_s<seed>/row.json`` and its compact model; a rerun skips
the runs already there, so an interrupted benchmark continues. Latency is timed at the end for
every model together (interleaved rounds, batch 1 and 64), so a busy machine during training
does not bias one method. Writes results/peers.json (every run), results/peers.md (mean ± std
per method and target, and the accuracy of each peer at sss's measured latency) and two
figures: results/peers_accuracy_vs_macs.png and results/peers_accuracy_vs_latency.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import torch

import sss
from peer_methods import METHODS, PEER_CONFIG, QUICK_PEER_CONFIG, SSS_STRUCTURES, timed_run, train_dense
from sss.data import load_dataset
from sss.viz.figure import save_figure

RESULTS = Path(__file__).parent / "results"
FIGURES = ("accuracy", "accuracy_after_cut", "macs_fraction", "params", "b1_ms", "b64_ms", "seconds")


def _stat(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(rows: list[dict]) -> dict[str, dict[float, dict]]:
    """Mean ± std of every figure per (method, target)."""
    table: dict[str, dict[float, dict]] = {}
    for r in rows:
        table.setdefault(r["method"], {}).setdefault(r["target"], {"runs": []})["runs"].append(r)
    for per_target in table.values():
        for cell in per_target.values():
            for key in FIGURES:
                cell[key] = _stat([r[key] for r in cell["runs"]])
            cell["n"] = len(cell.pop("runs"))
    return table


def at_latency(curve: list[tuple[float, float]], latency: float) -> float | None:
    """A method's accuracy at ``latency`` by linear interpolation between its measured points
    (``None`` outside them: the method never ran that fast, or that slow)."""
    curve = sorted(curve)
    for (l0, a0), (l1, a1) in itertools.pairwise(curve):
        if l0 <= latency <= l1:
            return a0 if l1 == l0 else a0 + (a1 - a0) * (latency - l0) / (l1 - l0)
    return None


def equal_latency(table: dict, dense: dict, key: str = "b1_ms") -> list[dict]:
    """Per target and sss variant: its latency (``key``: ``b1_ms`` or ``b64_ms``) and every peer's
    accuracy at that latency."""
    curves = {m: sorted((c[key]["mean"], c["accuracy"]["mean"]) for c in per.values())
              for m, per in table.items() if m not in SSS_STRUCTURES}  # fmt: skip
    dense_point = (dense[key]["mean"], dense["accuracy"]["mean"])
    out = []
    for target in sorted({t for per in table.values() for t in per}):
        for variant in (m for m in SSS_STRUCTURES if target in table.get(m, {})):
            cell = table[variant][target]
            latency = cell[key]["mean"]
            peers = {m: at_latency([*curve, dense_point], latency) for m, curve in curves.items()}
            out.append({"target": target, "sss": variant, "ms": latency,
                        "accuracy": cell["accuracy"]["mean"], "peers": peers})  # fmt: skip
    return out


def fastest(table: dict, key: str) -> dict[str, tuple[float, float]]:
    """Each peer's fastest measured point: (ms at ``key``, accuracy)."""
    return {m: min((c[key]["mean"], c["accuracy"]["mean"]) for c in per.values())
            for m, per in table.items() if m not in SSS_STRUCTURES}  # fmt: skip


def plot(table: dict, dense: dict, x: str, xlabel: str, path: Path, epochs: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for method, per in table.items():
        cells = [per[t] for t in sorted(per)]
        ax.errorbar([c[x]["mean"] for c in cells], [c["accuracy"]["mean"] for c in cells],
                    xerr=[c[x]["std"] for c in cells], yerr=[c["accuracy"]["std"] for c in cells],
                    marker="o", capsize=3, lw=1.4, label=method)  # fmt: skip
    ax.errorbar([dense[x]["mean"]], [dense["accuracy"]["mean"]], yerr=[dense["accuracy"]["std"]], marker="*",
                markersize=12, color="black", capsize=3, ls="none", label="dense")  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(f"ResNet-20, Fashion-MNIST, {epochs} epochs per method")
    save_figure(fig, path)


def latency_table(table: dict, rows: list[dict], batch: int) -> list[str]:
    """The equal-latency comparison at one batch size, as markdown lines."""
    peers = sorted({p for r in rows for p in r["peers"]})
    lines = ["", f"At each sss model's measured batch-{batch} latency (peers interpolated between their own measured "
             "points, dense included; — : the peer has no model that fast):", "",
             f"| target | sss variant | b{batch} ms | sss accuracy | " + " | ".join(peers) + " | sss ahead |",
             "|---" * (5 + len(peers)) + "|"]  # fmt: skip
    for r in rows:
        values = " | ".join("—" if r["peers"][p] is None else f"{r['peers'][p]:.2f}%" for p in peers)
        reached = [v for v in r["peers"].values() if v is not None]
        ahead = "yes (no peer that fast)" if not reached else ("yes" if r["accuracy"] >= max(reached) else "no")
        lines.append(f"| {r['target']} | {r['sss']} | {r['ms']:.2f} | {r['accuracy']:.2f}% | {values} | {ahead} |")
    points = sorted(fastest(table, f"b{batch}_ms").items())
    quickest = ", ".join(f"{m} {ms:.2f} ms ({acc:.2f}%)" for m, (ms, acc) in points)
    return [*lines, "", f"The peers' fastest models at batch {batch}: {quickest}."]


def markdown(table: dict, dense: dict, latency_rows: dict[int, list[dict]], device: str) -> str:
    def cell(c: dict, key: str, fmt: str) -> str:
        return f"{c[key]['mean']:{fmt}} ± {c[key]['std']:{fmt}}"

    lines = ["| method | target | n | accuracy | after cut | MACs / dense | params | b1 ms | b64 ms | wall s |",
             "|---" * 10 + "|"]  # fmt: skip
    for method, per in table.items():
        for t in sorted(per):
            c = per[t]
            lines.append(f"| {method} | {t} | {c['n']} | {cell(c, 'accuracy', '.2f')} | "
                         f"{cell(c, 'accuracy_after_cut', '.1f')} | {cell(c, 'macs_fraction', '.3f')} | "
                         f"{c['params']['mean'] / 1e3:.1f}k | {cell(c, 'b1_ms', '.2f')} | {cell(c, 'b64_ms', '.1f')} | "
                         f"{c['seconds']['mean']:.0f} |")  # fmt: skip
    lines.append(
        f"| dense | 1.0 | {dense['n']} | {cell(dense, 'accuracy', '.2f')} | | 1.000 | | "
        f"{cell(dense, 'b1_ms', '.2f')} | {cell(dense, 'b64_ms', '.1f')} | {dense['seconds']['mean']:.0f} |"
    )
    for batch, rows in latency_rows.items():
        lines += latency_table(table, rows, batch)
    lines += ["", f"Latency on {device}; mean ± std over seeds."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--out", default="runs/bench_peers")
    parser.add_argument("--report-only", action="store_true", help="only time and summarise the runs already done")
    parser.add_argument("--train-only", action="store_true", help="train the missing runs, then stop (no timing)")
    parser.add_argument("--quick", action="store_true", help="the smoke version: narrow net, 2.5k images, 3 epochs")
    parser.add_argument("--results", default=str(RESULTS), help="where the tables and figures go")
    args = parser.parse_args()
    out, results = Path(args.out), Path(args.results)
    cfg = QUICK_PEER_CONFIG if args.quick else PEER_CONFIG
    train, test = load_dataset("fashion-mnist", True), load_dataset("fashion-mnist", False)
    example = torch.zeros(1, *test.shape)
    for seed in args.seeds if not args.report_only else []:
        if not (out / f"dense_s{seed}" / "row.json").exists():
            dense = train_dense(cfg, seed, out / f"dense_s{seed}", train)
            seconds = sum(json.loads(x)["seconds"] for x in (out / f"dense_s{seed}" / "metrics.jsonl").open())
            row = {"method": "dense", "target": 1.0, "seed": seed, "accuracy": sss.evaluate(dense, test)[0],
                   "macs": sss.count(dense, example)[0], "seconds": seconds}  # fmt: skip
            (out / f"dense_s{seed}" / "row.json").write_text(json.dumps(row) + "\n")
        for target in args.targets:
            for method in args.methods:
                folder = out / f"{method}_{target}_s{seed}"
                if not (folder / "row.json").exists():
                    row = timed_run(cfg, method, target, seed, folder, train, test)
                    (folder / "row.json").write_text(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    if args.train_only:
        return
    folders = sorted(p.parent for p in out.glob("*/row.json"))
    rows = [json.loads((f / "row.json").read_text()) for f in folders]
    models = {f.name: sss.load(f / ("model" if f.name.startswith("dense") else "compact")) for f in folders}
    latency = sss.compare_latency(models, test.shape, (1, 64), rounds=5)
    for f, r in zip(folders, rows, strict=True):
        r["b1_ms"], r["b64_ms"] = latency[f.name][1], latency[f.name][64]
    dense_rows = [r for r in rows if r["method"] == "dense"]
    dense_macs = {r["seed"]: r["macs"] for r in dense_rows}
    runs = [r for r in rows if r["method"] != "dense"]
    for r in runs:
        r["macs_fraction"] = r["macs"] / dense_macs[r["seed"]]
    for r in dense_rows:
        r["macs_fraction"] = 1.0
    dense = {k: _stat([r[k] for r in dense_rows]) for k in ("accuracy", "b1_ms", "b64_ms", "seconds", "macs_fraction")}
    dense["n"] = len(dense_rows)
    table = summarise(runs)
    latency_rows = {b: equal_latency(table, dense, f"b{b}_ms") for b in (1, 64)}
    device = sss.measure.device_name("cpu")
    results.mkdir(parents=True, exist_ok=True)
    schedule = {"train_subset": cfg.train_subset, "val_size": cfg.val_size, "epochs": cfg.epochs}
    report = {"schedule": schedule, "device": device, "dense": dense,
              "summary": {m: {str(t): c for t, c in per.items()} for m, per in table.items()},
              "equal_latency": {str(b): r for b, r in latency_rows.items()}, "runs": rows}  # fmt: skip
    (results / "peers.json").write_text(json.dumps(report, indent=2) + "\n")
    (results / "peers.md").write_text(markdown(table, dense, latency_rows, device))
    plot(table, dense, "macs_fraction", "MACs / dense MACs", results / "peers_accuracy_vs_macs.png", cfg.epochs)
    plot(table, dense, "b1_ms", f"batch-1 latency (ms), {device}", results / "peers_accuracy_vs_latency.png",
         cfg.epochs)  # fmt: skip
    print((results / "peers.md").read_text())


if __name__ == "__main__":
    main()
