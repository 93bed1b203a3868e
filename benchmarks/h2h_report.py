"""The head-to-head's tables and figures: mean ± std and a 95% interval per method and target,
sss's best against the best peer at every target, and accuracy at equal batch-1 latency."""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path

from sss.viz.figure import save_figure

FIGURES = ("accuracy", "accuracy_after_cut", "macs_fraction", "params", "b1_ms", "b64_ms", "seconds")
LATENCY = ("b1_ms", "b64_ms")
#: The key of a record kept from an earlier results file (its run folder gone): its latency was
#: timed in another pass, on a machine whose speed drifts by tens of percent over an hour, so
#: latency is averaged over the runs timed together in this pass where a cell has any.
EARLIER = "timed_in_an_earlier_pass"
#: Two-sided 95% Student-t quantiles by degrees of freedom (n - 1).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
CONTROLS = ("uniform", "random")
#: How far ahead of the best peer sss's best must be (issue "Beat Torch-Pruning's best").
MARGIN = 0.3


def is_sss(method: str) -> bool:
    """Whether ``method`` is one of sss's (``sss``, ``sss-channels``, ``sss+kd``, ...)."""
    return method.startswith("sss")


def _stat(values: list[float]) -> dict:
    n = len(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    half = T95.get(n - 1, 1.96) * std / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": statistics.mean(values), "std": std, "ci95": half}


def summarise(rows: list[dict]) -> dict[str, dict[float, dict]]:
    """Mean, std and 95% half-interval of every figure per (method, target)."""
    table: dict[str, dict[float, dict]] = {}
    for r in rows:
        table.setdefault(r["method"], {}).setdefault(r["target"], {"runs": []})["runs"].append(r)
    for per_target in table.values():
        for cell in per_target.values():
            timed = [r for r in cell["runs"] if not r.get(EARLIER)] or cell["runs"]
            for key in FIGURES:
                cell[key] = _stat([r[key] for r in (timed if key in LATENCY else cell["runs"])])
            cell["n_timed"] = len(timed)
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


def best_against_peers(table: dict) -> list[dict]:
    """Per target: sss's best variant (mean accuracy), the best peer's (controls apart), the best
    control's, and whether sss is ahead of the best peer by the margin."""
    out = []
    for target in sorted({t for per in table.values() for t in per}):
        cells = {m: per[target] for m, per in table.items() if target in per}

        def best(keep, cells=cells):
            found = [(c["accuracy"]["mean"], m) for m, c in cells.items() if keep(m)]
            return max(found) if found else (None, None)

        s_acc, s_m = best(is_sss)
        p_acc, p_m = best(lambda m: not is_sss(m) and m not in CONTROLS)
        c_acc, c_m = best(lambda m: m in CONTROLS)
        n = min(c["n"] for c in cells.values())
        ahead = None if s_acc is None or p_acc is None else s_acc - p_acc
        out.append({"target": target, "sss": s_m, "sss_acc": s_acc, "peer": p_m, "peer_acc": p_acc,
                    "control": c_m, "control_acc": c_acc, "ahead": ahead, "n": n})  # fmt: skip
    return out


def _latency_lines(table: dict, dense: dict) -> list[str]:
    curves = {m: [(c["b1_ms"]["mean"], c["accuracy"]["mean"]) for c in per.values()] for m, per in table.items()}
    dense_point = (dense["b1_ms"]["mean"], dense["accuracy"]["mean"])
    lines = ["", "At sss's best variant's batch-1 latency, each peer's accuracy (interpolated between its own "
             "measured points, dense included; — : the peer has no model that fast):", ""]  # fmt: skip
    peers = sorted(m for m in table if not is_sss(m))
    lines += ["| target | sss variant | b1 ms | sss | " + " | ".join(peers) + " |", "|---" * (4 + len(peers)) + "|"]
    for row in best_against_peers(table):
        if row["sss"] is None:
            continue
        ms = table[row["sss"]][row["target"]]["b1_ms"]["mean"]
        values = [at_latency([*curves[p], dense_point], ms) for p in peers]
        shown = " | ".join("—" if v is None else f"{v:.2f}%" for v in values)
        lines.append(f"| {row['target']} | {row['sss']} | {ms:.2f} | {row['sss_acc']:.2f}% | {shown} |")
    return lines


def markdown(table: dict, dense: dict, device: str, schedule: str, kept: int = 0) -> str:
    def cell(c: dict, key: str, fmt: str) -> str:
        return f"{c[key]['mean']:{fmt}} ± {c[key]['std']:{fmt}}"

    lines = [f"{schedule}; test accuracy at the last epoch, mean ± std over seeds [95% interval].", "",
             "| method | target | n | accuracy | after cut | MACs / dense | params | b1 ms | b64 ms | wall s |",
             "|---" * 10 + "|"]  # fmt: skip
    for method, per in sorted(table.items()):
        for t in sorted(per):
            c = per[t]
            ci = f" [±{c['accuracy']['ci95']:.2f}]" if c["n"] > 1 else ""
            n = f"{c['n']} ({c['n_timed']} timed)" if c["n_timed"] < c["n"] else c["n"]
            lines.append(f"| {method} | {t} | {n} | {cell(c, 'accuracy', '.2f')}{ci} | "
                         f"{cell(c, 'accuracy_after_cut', '.1f')} | {cell(c, 'macs_fraction', '.3f')} | "
                         f"{c['params']['mean'] / 1e3:.1f}k | {cell(c, 'b1_ms', '.2f')} | {cell(c, 'b64_ms', '.1f')} | "
                         f"{c['seconds']['mean']:.0f} |")  # fmt: skip
    lines.append(
        f"| dense | 1.0 | {dense['n']} | {cell(dense, 'accuracy', '.2f')} | | 1.000 | | "
        f"{cell(dense, 'b1_ms', '.2f')} | {cell(dense, 'b64_ms', '.1f')} | {dense['seconds']['mean']:.0f} |"
    )
    lines += ["", f"sss's best against the best peer (Torch-Pruning's methods and GAL; the controls apart), "
              f"mean accuracy; the bar is +{MARGIN} points:", "",
              "| target | n (fewest) | sss best | best peer | sss ahead by | best control |",
              "|---" * 6 + "|"]  # fmt: skip
    for r in best_against_peers(table):
        if r["sss"] is None or r["peer"] is None:
            continue
        verdict = "yes" if r["ahead"] >= MARGIN else "no"
        control = f"{r['control']} {r['control_acc']:.2f}%" if r["control"] else "—"
        lines.append(f"| {r['target']} | {r['n']} | {r['sss']} {r['sss_acc']:.2f}% | "
                     f"{r['peer']} {r['peer_acc']:.2f}% | {r['ahead']:+.2f} ({verdict}) | {control} |")  # fmt: skip
    lines += _latency_lines(table, dense)
    timed = "every model timed in the same interleaved passes"
    if kept:
        timed += (
            f"; {kept} record(s) come from an earlier call whose run folders were gone: their accuracy "
            "counts, but latency (b1, b64 and the equal-latency table) is the mean over the runs timed in "
            "this pass only, since this machine's speed drifts between passes"
        )
    lines += ["", f"Latency on {device}, {timed}."]
    return "\n".join(lines) + "\n"


def plot(table: dict, dense: dict, x: str, xlabel: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.8), dpi=120)
    # tab20 and a marker per family: with 16 methods, tab10's colours repeat and two curves would
    # read as one.
    colours = plt.get_cmap("tab20").colors
    for i, (method, per) in enumerate(sorted(table.items())):
        cells = [per[t] for t in sorted(per)]
        family = "sss" if is_sss(method) else ("control" if method in CONTROLS else "peer")
        style, marker = {"sss": ("-", "o"), "control": (":", "^"), "peer": ("--", "s")}[family]
        ax.errorbar([c[x]["mean"] for c in cells], [c["accuracy"]["mean"] for c in cells],
                    xerr=[c[x]["std"] for c in cells], yerr=[c["accuracy"]["std"] for c in cells],
                    marker=marker, capsize=3, lw=1.4, ls=style, color=colours[i % len(colours)],
                    label=method)  # fmt: skip
    ax.errorbar([dense[x]["mean"]], [dense["accuracy"]["mean"]], yerr=[dense["accuracy"]["std"]], marker="*",
                markersize=12, color="black", capsize=3, ls="none", label="dense")  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7, ncol=2)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
