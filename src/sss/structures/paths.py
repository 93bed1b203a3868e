"""Module paths: which ones lie under others (for ``ignore=[...]`` and nested structures), and
cutting a tensor that a path names."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def under(path: str, prefixes: Sequence[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or a submodule of one (``"a.b"`` is under ``"a"``)."""
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def keep_along(model: nn.Module, path: str, axis: int, kept: Sequence[int]) -> None:
    """Keeps only the ``kept`` entries along ``axis`` of the parameter or buffer at ``path``
    (``"blocks.0.attn.relative_position_bias_table"``, ``"cls_token"``), in place: a parameter
    stays a parameter (and keeps ``requires_grad``), a buffer keeps its persistence."""
    owner_path, _, name = path.rpartition(".")
    owner = model.get_submodule(owner_path)
    tensor = getattr(owner, name)
    index = torch.tensor(list(kept), dtype=torch.long, device=tensor.device)
    cut = tensor.detach().index_select(axis, index).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(owner, name, nn.Parameter(cut, requires_grad=tensor.requires_grad))
    else:
        owner.register_buffer(name, cut, persistent=name not in owner._non_persistent_buffers_set)
