"""Latency of several models (CPU or GPU), measured in interleaved rounds."""

from __future__ import annotations

import copy
import statistics
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.utils import benchmark


def device_name(device: str | torch.device) -> str:
    """What a latency was measured on, for reports: ``cpu (2 threads)`` or the GPU's name."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def compare_latency(
    models: Mapping[str, nn.Module],
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 64),
    *,
    rounds: int = 7,
    min_run_time: float = 0.2,
    num_threads: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, dict[int, float]]:
    """Median forward latency in milliseconds, ``{model: {batch: ms}}``.

    Each round times every model once, in turn (``torch.utils.benchmark.Timer``), so slow
    drifts of the machine hit all models alike; the figure is the median over rounds.

    Args:
        models: Models to compare; they are put in eval mode.
        input_shape: Shape of one input without the batch dimension, e.g. ``(1, 28, 28)``.
        batch_sizes: Batch sizes to time.
        rounds: Interleaved rounds per batch size.
        min_run_time: Seconds each timing lasts at least.
        num_threads: Threads for torch (default: torch's current setting).
        device: Where to time them; models elsewhere are timed as copies moved there. On a GPU
            ``torch.utils.benchmark`` synchronises before reading the clock.
    """
    device = torch.device(device)
    models = {name: m if next(m.parameters()).device == device else copy.deepcopy(m).to(device)
              for name, m in models.items()}  # fmt: skip
    threads = num_threads or torch.get_num_threads()
    result: dict[str, dict[int, float]] = {name: {} for name in models}
    for m in models.values():
        m.eval()
    for batch in batch_sizes:
        x = torch.randn(batch, *input_shape, device=device)
        timers = {
            name: benchmark.Timer("model(x)", globals={"model": m, "x": x}, num_threads=threads)
            for name, m in models.items()
        }
        with torch.inference_mode():
            for m in models.values():  # warm-up: allocator and oneDNN primitive caches
                m(x)
            samples: dict[str, list[float]] = {name: [] for name in models}
            for _ in range(rounds):
                for name, timer in timers.items():
                    samples[name].append(timer.blocked_autorange(min_run_time=min_run_time).median)
        for name in models:
            result[name][batch] = 1e3 * statistics.median(samples[name])
    return result
