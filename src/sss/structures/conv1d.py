"""Hugging Face's ``Conv1D`` (GPT-2's linear layer: ``x @ W + b`` with ``W`` stored as
``(in, out)``) rewritten as ``nn.Linear``, so that sss and Torch-Pruning read it as the linear
layer it is: its output rows are channels or heads, its input columns are cut with them.

The rewrite is the same function (``F.linear`` with the transposed weight, to float rounding) and
an edit in the model's history (``convert_conv1d``), replayed on load before any cut. A compact
GPT-2 keeps ``nn.Linear`` layers, so it goes through ``sss.save``/``sss.load``, not
``save_pretrained`` (whose checkpoints store ``Conv1D``'s ``(in, out)`` weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sss.structures.paths import under


def is_conv1d(m: nn.Module) -> bool:
    """Whether ``m`` is Hugging Face's ``Conv1D`` (found by name and home, so that transformers
    stays an optional dependency)."""
    return (type(m).__name__ == "Conv1D" and type(m).__module__.startswith("transformers.")
            and isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() == 2)  # fmt: skip


def as_linear(conv: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` that computes what ``conv`` does, on its device and dtype."""
    fan_in, fan_out = conv.weight.shape
    linear = nn.Linear(fan_in, fan_out, bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
    linear.train(conv.training)
    return linear


def convert_conv1d(model: nn.Module, ignore: Sequence[str] = ()) -> list[str]:
    """Replaces every ``Conv1D`` of ``model`` in place by :func:`as_linear` (except at or under a
    path in ``ignore``) and returns their paths."""
    paths = [name for name, m in model.named_modules() if is_conv1d(m) and not under(name, ignore)]
    for path in paths:
        model.set_submodule(path, as_linear(model.get_submodule(path)))
    return paths
