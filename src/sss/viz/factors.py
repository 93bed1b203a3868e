"""The scaling factors λ over training, one line per structure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sss.viz.figure import save_figure


def plot_factor_trace(
    trace: Sequence[dict],
    names: Sequence[str],
    path: str | Path,
    title: str = "",
    freeze_epoch: int | None = None,
    removed: int | None = None,
    kind: str = "block",
) -> Path:
    """Draws each factor's value against the epoch and saves a PNG.

    Args:
        trace: Snapshots ``{"epoch": float, "values": [λ...]}`` (``TrainResult.factor_trace``).
        names: A label per factor (gate names), in the order of ``values``.
        path: Output PNG path.
        title: Figure title.
        freeze_epoch: Where the selection was frozen (drawn as a dashed line), if it was.
        removed: How many factors the run removed, for the title (default: the zeros of the
            last snapshot).
        kind: Which factors are drawn, for the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [s["epoch"] for s in trace]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    stages = sorted({n.split(".")[0] for n in names})
    cmap = plt.get_cmap("viridis", max(len(stages), 2))
    seen: set[str] = set()
    for i, name in enumerate(names):
        stage = name.split(".")[0]
        ax.plot(
            epochs, [s["values"][i] for s in trace], color=cmap(stages.index(stage)), lw=1.4,
            label=stage if stage not in seen else None,
        )  # fmt: skip
        seen.add(stage)
    if removed is None:
        removed = sum(v == 0 for v in trace[-1]["values"]) if trace else 0
    ax.axhline(0, color="0.6", lw=0.8)
    if freeze_epoch is not None:
        ax.axvline(freeze_epoch, color="0.3", ls="--", lw=1, label="selection frozen")
    ax.set_xlabel("epoch")
    ax.set_ylabel("scaling factor λ")
    when = "at the freeze" if freeze_epoch is not None else "at the end"
    ax.set_title(title or f"SSS {kind} factors over training ({removed}/{len(names)} zero {when}, removed)")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
