"""Name → builder registry, in the style of timm's ``create_model``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator that registers a builder under its function name."""
    _BUILDERS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_BUILDERS)


def model_parameters(name: str) -> set[str]:
    """The keywords the builder of ``name`` accepts."""
    return set(inspect.signature(_BUILDERS[name]).parameters)


def create(name: str, **kwargs) -> nn.Module:
    """Builds a zoo model by name.

    The model remembers how it was built (``model.sss_spec``: name and keywords), so
    :func:`sss.load` can rebuild it without being given the unpruned model.

    Args:
        name: One of :func:`list_models`, e.g. ``"resnet56"``.
        **kwargs: Builder keywords such as ``num_classes``, ``in_channels``, ``shortcut``.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    model = _BUILDERS[name](**kwargs)
    model.sss_spec = {"name": name, "kwargs": dict(kwargs)}
    return model
