"""Whether a model has lost every path from its input: the checks behind the training loop's
collapse guard and ``sss prune``'s warnings."""

from __future__ import annotations

import torch
from torch import nn

from sss.structures import gates
from sss.structures.registry import get_kind


@torch.no_grad()
def is_constant_output(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``model`` gives (to rounding) the same output for every input in the batch ``x``."""
    was_training = model.training
    out = model.eval()(x)
    model.train(was_training)
    spread = float((out - out[:1]).abs().max())
    return spread <= 1e-6 * max(float(out.abs().max()), 1e-12)


def collapse_warnings(model: nn.Module) -> list[str]:
    """Structures a gated model is about to lose entirely: a layer whose every channel factor is
    zero (it keeps one zero channel and passes nothing on), or a stage whose every block is."""
    warnings, stages = [], {}
    for ref in gates(model):
        zero = ref.num_zero == ref.weight.numel()
        if get_kind(ref.kind).min_keep > 0:
            if zero and ref.weight.numel() > 1:
                owner = get_kind(ref.kind).owner(ref.name)
                warnings.append(f"{owner}: every {ref.kind} factor is zero, so it passes nothing on")
        else:
            parent = ref.name.rsplit(".", 2)[0] if ref.name.count(".") >= 2 else ""
            stages.setdefault(parent, []).append(zero)
    warnings += [f"{stage}: all {len(zeros)} blocks are removed" for stage, zeros in stages.items()
                 if stage and len(zeros) > 1 and all(zeros)]  # fmt: skip
    return warnings
