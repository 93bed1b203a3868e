"""MACs, parameters, latency and accuracy."""

from sss.measure.accuracy import evaluate
from sss.measure.count import count
from sss.measure.latency import compare_latency

__all__ = ["compare_latency", "count", "evaluate"]
