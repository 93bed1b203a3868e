"""MACs and parameter counts from torch's own FLOP counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count(model: nn.Module, example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[int, int]:
    """Returns ``(MACs, parameters)`` of one forward pass on ``example_inputs``.

    MACs are half of the FLOPs that ``torch.utils.flop_counter`` attributes to matrix
    multiplies and convolutions (the usual "FLOPs = multiply-adds" of pruning papers);
    elementwise ops, BN and pooling are not counted. Use a batch of 1 for per-image MACs.
    torch's fused transformer fast path (``nn.TransformerEncoderLayer`` in eval mode) is one
    kernel the counter cannot see into, so it is switched off while counting: its slow path
    computes the same function with visible matrix multiplies.
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    inputs = tuple(x.to(device) for x in inputs)
    was_training = model.training
    model.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(*inputs)
        except AssertionError as e:  # torch's module tracker, when a parameter is a module's input
            if "gradient function" not in str(e):  # under no_grad (timm's register tokens): count with grad
                raise
            with FlopCounterMode(display=False) as counter:
                model(*inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return counter.get_total_flops() // 2, params


def format_count(n: float) -> str:
    """A MAC or parameter count to three significant digits with its unit: 31.0M, 45.6k, 812."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"
