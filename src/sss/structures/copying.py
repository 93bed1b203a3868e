"""Copying a user's model: ``copy.deepcopy``, after dropping the caches some models keep of
tensors computed from their parameters."""

from __future__ import annotations

import copy

from torch import nn


def deep_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``. A tensor computed from a parameter with autograd on cannot be
    deep-copied; timm's LeViT-style attention (TinyViT, EfficientFormer) caches one, its per-head
    biases, on any eval-mode forward run with gradients. Those modules drop their caches in their
    own ``train``: it is called on every module that overrides it, and every module's mode is then
    put back as it was."""
    modes = {m: m.training for m in model.modules()}
    for m in modes:
        if type(m).train is not nn.Module.train:
            m.train(modes[m])
    for m, mode in modes.items():
        m.training = mode
    return copy.deepcopy(model)
