"""Plots."""

from sss.viz.factors import plot_factor_trace
from sss.viz.metrics import plot_metrics

__all__ = ["plot_factor_trace", "plot_metrics"]
