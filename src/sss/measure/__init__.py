"""MACs, parameters, latency and accuracy."""

from sss.measure.accuracy import evaluate
from sss.measure.count import count
from sss.measure.latency import compare_latency
from sss.measure.structure_costs import mac_weights, structure_macs

__all__ = ["compare_latency", "count", "evaluate", "mac_weights", "structure_macs"]
