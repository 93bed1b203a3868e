"""MACs, parameters, latency and accuracy."""

from sss.measure.accuracy import evaluate
from sss.measure.count import count, format_count
from sss.measure.latency import compare_latency, device_name
from sss.measure.structure_costs import mac_weights, structure_costs, structure_macs

__all__ = [
    "compare_latency",
    "count",
    "device_name",
    "evaluate",
    "format_count",
    "mac_weights",
    "structure_costs",
    "structure_macs",
]
