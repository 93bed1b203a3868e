"""Per-epoch training figures (from ``metrics.jsonl`` records) as line plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sss.viz.figure import save_figure


def plot_metrics(history: Sequence[dict], panels: Sequence[Sequence[str]], path: str | Path, title: str = "") -> Path:
    """One panel per group of keys, each key a line over the epochs; saves a PNG.

    Args:
        history: The per-epoch records (``TrainResult.history``).
        panels: Keys per panel, e.g. ``[("train_loss", "d_loss"), ("d_acc_real", "d_acc_fake")]``.
        path: Output PNG path.
        title: Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), dpi=120, squeeze=False)
    for ax, keys in zip(axes[0], panels, strict=True):
        for key in (k for k in keys if all(k in r for r in history)):  # a run without labels has no accuracy
            ax.plot(epochs, [r[key] for r in history], marker="o", lw=1.4, label=key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
