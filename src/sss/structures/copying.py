"""Copying a user's model: ``copy.deepcopy``, after dropping the caches some models keep of
tensors computed from their parameters, and with the buffers that were not part of the state
still not part of it."""

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
    copied = copy.deepcopy(model)
    keep_non_persistent(model, copied)
    return copied


def keep_non_persistent(model: nn.Module, copied: nn.Module) -> None:
    """Marks ``copied``'s buffers non-persistent where ``model``'s are (``copied``: a copy of
    ``model``, or ``model`` traced). A ``torch.fx.GraphModule`` registers every buffer it copies
    as persistent, when it is built and when it is deep-copied (a traced block is rebuilt): Swin
    V2-Cr's ``attn_mask`` would then be saved, and not fit the model rebuilt from its unpruned form."""
    copies = dict(copied.named_modules(remove_duplicate=False))
    for path, m in model.named_modules(remove_duplicate=False):
        twin = copies.get(path)
        if twin is not None and m._non_persistent_buffers_set:
            twin._non_persistent_buffers_set |= m._non_persistent_buffers_set & set(twin._buffers)
