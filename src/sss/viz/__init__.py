"""Plots."""

from sss.viz.factors import plot_factor_trace

__all__ = ["plot_factor_trace"]
