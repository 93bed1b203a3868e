"""Factors that start from each structure's importance per MAC (``factor_init: importance``).

From trained weights the factors all start at 1, so the penalty cannot tell a structure the
model needs from one it does not, and magnitudes (:mod:`sss.budget.magnitude`) rank structures
within a gate only: a head's weight norm and a neuron's are on different scales. A first-order
estimate is on one scale for every kind: removing structure ``i`` (its factor from ``λ`` to 0)
changes the loss by about ``λ·∂L/∂λ``, so its importance is ``E[(λ·∂L/∂λ)²]`` over a few
batches (Molchanov et al., CVPR 2019, for gates). Divided by the MACs its removal frees
(:func:`sss.measure.structure_costs`), that is loss per MAC: the order of a knapsack.
:func:`init_from_importance` spreads every layer gate's factors geometrically over all gates
together by that score, weakest at ``floor`` and strongest at 1, and folds the inverse into the
gated layers and tokens, so the model computes the same function: with one γ for all (no
per-kind price) the proximal steps then remove the least important structures per MAC first,
whatever their kind, and the data moves the rest.

The floor is 0.001: on timm's ViT-Tiny (bench_vit_timm.py, 0.5 of the MACs, seeds 0 and 1) a
floor of 0.1 ended at 78.6% and 76.9%, 0.01 at 82.3% and 81.8%, 0.001 at 82.6% and 82.9%: the
weakest structures' weights, scaled by ``1/floor``, barely move under SGD (their relative step is
``floor²``), so they leave without disturbing the rest, and the strong ones keep training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from sss.budget.magnitude import hold_strongest
from sss.measure.structure_costs import structure_costs
from sss.structures.gate import ChannelGated, GateRef, ScaledParameter, fold_output_scale, gates


def layer_gates(model: nn.Module) -> list[GateRef]:
    """The gates whose factors a ranking sets: layer gates of more than one structure (channels,
    groups, heads, the embedding width), not blocks or branches (one structure per gate)."""
    owners = {w.gate for w in model.modules() if isinstance(w, ChannelGated) and w.group is not None}
    return [r for r in gates(model) if r.module in owners and r.weight.numel() > 1]


def taylor_importance(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:  # fmt: skip
    """``{gate name: E[(λ·∂L/∂λ)²] per factor}`` over ``batches``, in eval mode (no dropout), the
    weights' gradients untouched."""
    refs = gates(model)
    totals = [torch.zeros_like(r.weight, dtype=torch.float32) for r in refs]
    was_training, n = model.training, 0
    model.eval()
    try:
        for x, y in batches:
            grads = torch.autograd.grad(loss_fn(model(x), y), [r.weight for r in refs], allow_unused=True)
            for total, ref, g in zip(totals, refs, grads, strict=True):
                if g is not None:
                    total += (ref.weight.detach() * g).float().square()
            n += 1
    finally:
        model.train(was_training)
    return {r.name: t / max(n, 1) for r, t in zip(refs, totals, strict=True)}


@torch.no_grad()
def init_from_importance(model: nn.Module, importance: dict[str, torch.Tensor], example: torch.Tensor,
                         floor: float = 0.001, keep: float = 0.0) -> int:  # fmt: skip
    """Sets the factors of every layer gate (channels, groups, heads, embedding width; not blocks
    or branches, which are one structure per gate) to ``floor^((log s_max - log s) / (log s_max -
    log s_min))`` with ``s`` = importance / MACs freed, over all those gates together (each gate's
    ``keep`` fraction of strongest at 1: :func:`~sss.budget.magnitude.hold_strongest`), and folds
    the inverse into the gated layers and scaled tokens: the same function. Returns how many
    gates were set. Call it on a freshly gated model (factors still 1)."""
    refs = layer_gates(model)
    if not refs:
        return 0
    costs = structure_costs(model, example)
    scores = [importance[r.name].clamp_min(0) / max(costs[r.name], 1e-12) for r in refs]
    flat = torch.cat(scores)
    top = float(flat.max())
    if top <= 0:
        return 0
    logs = [s.clamp_min(top * 1e-12).log() for s in scores]
    high, low = float(torch.cat(logs).max()), float(torch.cat(logs).min())
    wrappers = [m for m in model.modules() if isinstance(m, ChannelGated)]
    before = [w.scale().detach().clone() for w in wrappers]
    old = {id(r.module): r.weight.detach().clone() for r in refs}
    for ref, log in zip(refs, logs, strict=True):
        lam = floor ** ((high - log) / (high - low)) if high > low else torch.ones_like(log)
        ref.weight.copy_(hold_strongest(lam, log, keep).to(ref.weight))
    for wrapper, scale in zip(wrappers, before, strict=True):
        fold_output_scale(wrapper.inner, scale / wrapper.scale().detach())
    for owner in model.modules():  # tokens scaled outside a layer (cls_token, pos_embed)
        for chain in getattr(owner, "parametrizations", {}).values():
            for p in chain:
                if isinstance(p, ScaledParameter) and id(p.gates[0]) in old:
                    ratio = old[id(p.gates[0])] / p.gates[0].weight.detach()
                    chain.original.mul_(p.along(ratio, chain.original))
    return len(refs)
