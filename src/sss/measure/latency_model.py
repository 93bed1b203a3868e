"""A latency model fitted on this machine: what a compact model's forward pass takes here,
predicted from its architecture without timing it (for a latency target; docs/design.md,
"budgets").

MACs are not latency: at batch 1 on a CPU every layer costs a fixed overhead (dispatch, a
kernel launch, a pass over its output) whatever its width, so removing a block saves more time
than thinning channels for the same MACs. The model is linear in four features of the compact
architecture, fitted by least squares to timings of randomly pruned variants of the model:

    latency ≈ c₀ + c₁·MACs + c₂·(conv and linear layers) + c₃·(their output elements)

Coefficients that come out negative are dropped (they would reward cost), so every removal
predicts a saving. A target is then a cost like MACs: per-structure savings are measured with
the model (:func:`sss.measure.structure_costs`), and the landing checks the prediction against
a real timing.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch
from torch import nn

from sss.measure.count import count
from sss.measure.latency import compare_latency
from sss.structures.gate import factors_restored, gates
from sss.structures.prune import prune
from sss.structures.registry import get_kind

FEATURES = ("intercept", "macs", "layers", "activations")


def architecture_features(model: nn.Module, example: torch.Tensor) -> list[float]:
    """The latency model's features of ``model`` for a batch of one (``example``)."""
    layers, activations = 0, 0

    def hook(_module, _inputs, output) -> None:
        nonlocal layers, activations
        layers += 1
        activations += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        macs = count(model, example)[0]  # one forward: the hooks count as it runs
    finally:
        for h in handles:
            h.remove()
    return [1.0, float(macs), float(layers), float(activations)]


@dataclass
class LatencyModel:
    """Milliseconds per feature (:data:`FEATURES`) at ``batch`` on ``device``.

    ``fit_error`` is the largest relative error of the fit on the timings it came from.
    """

    coefficients: list[float]
    batch: int
    device: str
    fit_error: float = 0.0

    def predict(self, model: nn.Module, example: torch.Tensor) -> float:
        """Predicted latency (ms) of ``model`` (gated models: of what pruning them gives)."""
        compact = prune(model) if gates(model) else model
        return sum(c * f for c, f in zip(self.coefficients, architecture_features(compact, example), strict=True))


def _nonnegative_fit(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least squares with every coefficient held at ≥ 0 (by dropping features): no cost is negative,
    the intercept neither. A negative intercept, which timings taken under load can fit, would
    predict a small enough model to run in less than no time (a latency target below any model's
    floor was then not refused)."""
    active = list(range(x.shape[1]))
    while True:
        scale = x[:, active].abs().amax(0).clamp_min(1e-12)  # columns on one scale: MACs are ~1e7
        sol = torch.linalg.lstsq(x[:, active] / scale, y.unsqueeze(1)).solution.squeeze(1) / scale
        negative = [a for a, c in zip(active, sol.tolist(), strict=True) if c < 0]
        if not negative:
            coef = torch.zeros(x.shape[1], dtype=x.dtype)
            coef[active] = sol
            return coef
        active.remove(negative[0])


@torch.no_grad()
def calibrate_latency(
    model: nn.Module,
    example: torch.Tensor,
    *,
    batch: int = 1,
    device: str | torch.device = "cpu",
    variants: int = 12,
    seed: int = 0,
    rounds: int = 3,
) -> LatencyModel:
    """Times ``variants`` randomly pruned forms of a gated ``model`` (and its dense form) at
    ``batch`` on ``device`` and fits a :class:`LatencyModel`. ``model`` is not changed.

    Variant k zeroes a share of every gate's factors that grows from 0 to 90% over the variants
    (blocks with that probability), so the timings span the dense model to the smallest one.
    """
    rng = random.Random(seed)
    refs = gates(model)
    if not refs:
        raise ValueError("calibrate_latency needs a gated model (sss.attach): it times pruned variants of it")
    archs: list[nn.Module] = [prune(model)]
    with factors_restored(model):
        for k in range(variants):
            share = 0.9 * (k + 1) / variants
            for r in refs:
                w = r.weight.view(-1)
                w.fill_(1.0)
                n = w.numel()
                if get_kind(r.kind).coarse:  # a block or branch: on or off
                    if rng.random() < share:
                        w.zero_()
                else:
                    w[rng.sample(range(n), min(n - 1, round(share * n)))] = 0.0
            archs.append(prune(model))
    archs = [copy.deepcopy(a).to(memory_format=torch.contiguous_format) for a in archs]
    timed = compare_latency({str(i): a for i, a in enumerate(archs)}, tuple(example.shape[1:]), (batch,),
                            rounds=rounds, min_run_time=0.1, device=device)  # fmt: skip
    x = torch.tensor([architecture_features(a, example) for a in archs], dtype=torch.float64)
    y = torch.tensor([timed[str(i)][batch] for i in range(len(archs))], dtype=torch.float64)
    coef = _nonnegative_fit(x, y)
    error = float(((x @ coef - y).abs() / y).max())
    return LatencyModel(coef.tolist(), batch, str(device), error)
