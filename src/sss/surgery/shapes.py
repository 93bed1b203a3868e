"""Layer widths of a model as data, so a channel-pruned architecture can be rebuilt to load
its weights (the idea of timm's pruned-model specs)."""

from __future__ import annotations

from torch import nn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    """``{path: [in, out, groups]}`` for convs, ``{path: [in, out]}`` for linear layers and
    ``{path: [features]}`` for BatchNorms."""
    shapes: dict[str, list[int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            shapes[name] = [m.in_channels, m.out_channels, m.groups]
        elif isinstance(m, nn.Linear):
            shapes[name] = [m.in_features, m.out_features]
        elif isinstance(m, _NORMS):
            shapes[name] = [m.num_features]
    return shapes


def apply_layer_shapes(model: nn.Module, shapes: dict[str, list[int]]) -> None:
    """Replaces every layer whose width differs from ``shapes`` by a fresh one of that width."""
    current = layer_shapes(model)
    for name, shape in shapes.items():
        if current.get(name) == shape:
            continue
        m = model.get_submodule(name)
        if isinstance(m, nn.Conv2d):
            groups = shape[2] if len(shape) > 2 else m.groups  # specs before group factors had no groups
            new: nn.Module = nn.Conv2d(shape[0], shape[1], m.kernel_size, m.stride, m.padding, m.dilation, groups,
                                       m.bias is not None, m.padding_mode)  # fmt: skip
        elif isinstance(m, nn.Linear):
            new = nn.Linear(shape[0], shape[1], m.bias is not None)
        elif isinstance(m, _NORMS):
            new = type(m)(shape[0], m.eps, m.momentum, m.affine, m.track_running_stats)
        else:
            raise ValueError(f"{name} is a {type(m).__name__}; cannot give it the shape {shape}")
        model.set_submodule(name, new)
