"""The sizes of a model's layers, saved with it, so that a model resized outside sss (by
Torch-Pruning, by hand) still loads: the rebuilt skeleton's layers are resized to the saved
sizes before the weights are read.

sss's own removals are replayed from the edit history; this covers what the history cannot
know. Layers whose sizes live in attributes (convolutions, linear, batch/group/layer norms)
save those attributes; an attention module its ``num_heads``; any other module the shapes of
the parameters and buffers it holds itself (a ViT's ``cls_token`` and ``pos_embed``, cut by
Torch-Pruning with the embedding width). What else changed shape is left to the weight check,
which names the tensors that do not fit.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from sss.structures.tracing import is_attention

_CONV = ("in_channels", "out_channels", "groups")


def layer_sizes(model: nn.Module) -> dict[str, dict]:
    """Per layer path, the attributes that fix its tensors' shapes."""
    sizes: dict[str, dict] = {}
    for path, m in model.named_modules():
        if isinstance(m, _ConvNd):
            sizes[path] = {k: getattr(m, k) for k in _CONV}
        elif isinstance(m, nn.Linear):
            sizes[path] = {"in_features": m.in_features, "out_features": m.out_features}
        elif isinstance(m, _BatchNorm):
            sizes[path] = {"num_features": m.num_features}
        elif isinstance(m, nn.GroupNorm):
            sizes[path] = {"num_groups": m.num_groups, "num_channels": m.num_channels}
        elif isinstance(m, nn.LayerNorm):
            sizes[path] = {"normalized_shape": list(m.normalized_shape)}
        else:
            own = {n: list(t.shape) for n, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
                   if t is not None}  # fmt: skip
            entry: dict = {"tensors": own} if own else {}
            if is_attention(m):
                entry["num_heads"] = m.num_heads
                if isinstance(getattr(m, "attn_dim", None), int):  # timm's Attention reshapes by it
                    entry["attn_dim"] = m.attn_dim
            if entry:
                sizes[path] = entry
    return sizes


def _empty_like(tensor: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
    return None if tensor is None else torch.empty(shape, dtype=tensor.dtype, device=tensor.device)


def _set(m: nn.Module, name: str, shape: tuple[int, ...]) -> None:
    old = getattr(m, name, None)
    if old is None or tuple(old.shape) == shape:
        return
    new = _empty_like(old, shape)
    if isinstance(old, nn.Parameter):
        setattr(m, name, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        m.register_buffer(name, new)


def resize_layers(model: nn.Module, sizes: dict[str, dict]) -> int:
    """Gives every layer of ``model`` named in ``sizes`` those sizes (tensors left uninitialised:
    the saved weights fill them); returns how many layers changed.

    Raises:
        ValueError: An entry sets anything but its layer's size attributes, or a size that is
            not a whole number between 1 and the layer's current size (sizes come from a file:
            they may only shrink the rebuilt model, and all are checked before any tensor is
            made).
    """
    if not isinstance(sizes, dict):
        raise ValueError(f"the saved layer sizes are a {type(sizes).__name__}, not a mapping of layer paths")
    modules = dict(model.named_modules())
    for path, want in sizes.items():
        if path in modules:  # a layer the rebuilt model lacks sets nothing: the weight check names what differs
            _check_entry(path, modules[path], want)
    changed = 0
    for path, m in model.named_modules():
        want = sizes.get(path)
        if want is None or layer_sizes(m).get("") == want:
            continue
        changed += 1
        for k, v in want.items():
            if k == "tensors":
                for name, shape in v.items():
                    _set(m, name, tuple(shape))
            else:
                setattr(m, k, tuple(v) if isinstance(v, list) else v)
        if isinstance(m, _ConvNd):
            k = tuple(m.weight.shape[2:])
            outer, inner = (m.in_channels, m.out_channels) if m.transposed else (m.out_channels, m.in_channels)
            _set(m, "weight", (outer, inner // m.groups, *k))
            _set(m, "bias", (m.out_channels,))
        elif isinstance(m, nn.Linear):
            _set(m, "weight", (m.out_features, m.in_features))
            _set(m, "bias", (m.out_features,))
        elif isinstance(m, _BatchNorm):
            for name in ("weight", "bias", "running_mean", "running_var"):
                _set(m, name, (m.num_features,))
        elif isinstance(m, nn.GroupNorm):
            _set(m, "weight", (m.num_channels,))
            _set(m, "bias", (m.num_channels,))
        elif isinstance(m, nn.LayerNorm):
            _set(m, "weight", tuple(m.normalized_shape))
            _set(m, "bias", tuple(m.normalized_shape))
    return changed


def _check_entry(path: str, m: nn.Module, want: object) -> None:
    """A saved entry sets only ``m``'s own size attributes, to whole numbers no larger than now."""
    current = layer_sizes(m).get("", {})
    if not isinstance(want, dict):
        raise ValueError(f"the saved sizes of {path!r} are {str(want)[:60]!r}, not a mapping")
    if extra := sorted(set(want) - set(current)):
        raise ValueError(f"the saved sizes of {path!r} ({type(m).__name__}) set {extra}, which are not its "
                         f"size attributes ({sorted(current)}); the file is damaged or not from sss.save")  # fmt: skip
    for key, value in want.items():
        now = current[key]
        pairs = [(f"{key}.{n}", value.get(n) if isinstance(value, dict) else None, s) for n, s in now.items()] \
            if key == "tensors" else [(key, value, now)]  # fmt: skip
        if key == "tensors" and (not isinstance(value, dict) or set(value) - set(now)):
            raise ValueError(f"the saved sizes of {path!r} name tensors {str(value)[:60]} it does not hold")
        for what, new, old in pairs:
            if new is None and key == "tensors":
                continue
            if not _fits(new, old):
                raise ValueError(f"the saved size {what}={new!r} of {path!r} is not a whole number from 1 to its "
                                 f"size in the rebuilt model ({old!r}); the file is damaged, or the base is not the "
                                 "unpruned model")  # fmt: skip


def _fits(new: object, old: object) -> bool:
    if isinstance(old, list | tuple):
        same_rank = isinstance(new, list) and len(new) == len(old)
        return same_rank and all(_fits(a, b) for a, b in zip(new, old, strict=True))
    return isinstance(new, int) and not isinstance(new, bool) and 1 <= new <= old
