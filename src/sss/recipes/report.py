"""Before/after comparison of a dense and a compact model, as data and as a table."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from sss.data import ArrayDataset
from sss.measure import compare_latency, count, device_name, evaluate
from sss.structures import ResidualBlock


def blocks_per_stage(model: nn.Module) -> list[int]:
    """Residual blocks left in each ``layerN`` stage of a zoo model."""
    stages = [m for n, m in model.named_children() if n.startswith("layer")]
    return [sum(isinstance(b, ResidualBlock) for b in stage.children()) for stage in stages]


def compare_models(
    models: Mapping[str, nn.Module],
    test: ArrayDataset,
    *,
    latency_of: tuple[str, ...],
    rounds: int = 7,
    device: str = "cpu",
) -> dict[str, dict]:
    """Accuracy, MACs, params, blocks per stage for each model; latency on ``device`` (named in
    each timed row as ``latency_device``) for ``latency_of``."""
    example = torch.zeros(1, *test.shape)
    rows: dict[str, dict] = {}
    for name, model in models.items():
        macs, params = count(model, example)
        acc, _ = evaluate(model, test)
        rows[name] = {"accuracy": acc, "macs": macs, "params": params, "blocks": blocks_per_stage(model)}
    timed = compare_latency({n: models[n] for n in latency_of}, test.shape, (1, 64), rounds=rounds, device=device)
    for name, ms in timed.items():
        rows[name]["latency_ms"] = {str(b): v for b, v in ms.items()}
        rows[name]["latency_device"] = device_name(device)
    return rows


def format_table(rows: Mapping[str, dict]) -> str:
    """A Markdown table with one column per model."""

    def latency(row: dict, batch: str) -> str:
        return f"{row['latency_ms'][batch]:.2f} ms" if "latency_ms" in row else "—"

    names = list(rows)
    lines = [
        ("test accuracy", [f"{rows[n]['accuracy']:.2f}%" for n in names]),
        ("MACs", [f"{rows[n]['macs'] / 1e6:.2f}M" for n in names]),
        ("params", [f"{rows[n]['params'] / 1e3:.1f}k" for n in names]),
        ("latency, batch 1", [latency(rows[n], "1") for n in names]),
        ("latency, batch 64", [latency(rows[n], "64") for n in names]),
    ]
    if any(rows[n]["blocks"] for n in names):  # zoo ResNets; plain nets have no stages
        lines.append(("blocks per stage", ["/".join(map(str, rows[n]["blocks"])) for n in names]))
    out = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    out += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in lines]
    devices = sorted({rows[n]["latency_device"] for n in names if "latency_device" in rows[n]})
    if devices:
        out.append(f"\nLatency measured on {', '.join(devices)}.")
    return "\n".join(out)
