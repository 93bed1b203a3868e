"""Name → builder registry, in the style of timm's ``create_model``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(
    fn: Callable[..., nn.Module] | None = None, *, replace: bool = False
) -> Callable[..., nn.Module] | Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a builder under its function name (``@register_model`` or
    ``@register_model(replace=True)``). A name already taken is refused unless ``replace``."""

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if builder.__name__ in _BUILDERS and not replace:
            raise ValueError(f"model {builder.__name__!r} is already registered; pass replace=True to replace it")
        _BUILDERS[builder.__name__] = builder
        return builder

    return add if fn is None else add(fn)


def builder(name: str) -> Callable[..., nn.Module]:
    """The builder of a zoo name, or of an import path ``pkg.module:factory`` (a function or
    class that builds the user's ``nn.Module``; its module must be importable, e.g. on
    ``PYTHONPATH``). Importing runs the module's code: call this only with a name the user
    gave (a flag, a config, a Python call), never with one read from a model file unless the
    caller trusts it (see :func:`create_recorded`)."""
    if ":" in name:
        return _import_factory(name)
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}, or pkg.module:factory")
    return _BUILDERS[name]


def _import_factory(name: str) -> Callable[..., nn.Module]:
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"model {name!r}: cannot import {module_name!r} ({type(e).__name__}: {e}); "
                         "give pkg.module:factory with the module on PYTHONPATH") from None  # fmt: skip
    except SyntaxError as e:
        raise ValueError(f"model {name!r}: {module_name} has a syntax error at {e.filename}:{e.lineno} ({e.msg}); "
                         "fix the module") from None  # fmt: skip
    except Exception as e:  # the module's own code failed while importing: name it, it is the user's to fix
        raise ValueError(f"model {name!r}: importing {module_name} raised {type(e).__name__}: {e}; fix the module "
                         "(it runs when imported)") from None  # fmt: skip
    found = getattr(module, attr, None)
    if found is None:
        raise ValueError(f"model {name!r}: {module_name} has no {attr!r}; give pkg.module:factory")
    if not callable(found):
        raise ValueError(f"model {name!r}: {attr} is a {type(found).__name__}, not a function or class")
    return found


def list_models() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_BUILDERS)


def model_parameters(name: str) -> set[str] | None:
    """The keywords the builder of ``name`` accepts (``None``: any, it takes ``**kwargs``)."""
    params = inspect.signature(builder(name)).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def create(name: str, **kwargs) -> nn.Module:
    """Builds a zoo model by name, or a user's model by import path (``pkg.module:factory``).

    The model remembers how it was built (``model.sss_spec``: name and keywords), so
    :func:`sss.load` can rebuild it without being given the unpruned model.

    Args:
        name: One of :func:`list_models`, e.g. ``"resnet56"``, or ``"pkg.module:factory"``.
        **kwargs: Builder keywords such as ``num_classes``, ``in_channels``, ``shortcut``. A
            user's factory gets only those its signature names (``num_classes`` and
            ``in_channels`` come from the dataset and may not apply to it).

    Raises:
        ValueError: The name is unknown or cannot be imported, or the builder lacks a keyword
            it requires (named as the config key that sets it).
    """
    build = builder(name)
    accepted = model_parameters(name) if ":" in name else None
    if accepted is not None:
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    try:
        signature = inspect.signature(build)
    except (TypeError, ValueError):  # a builtin or C type without a signature: let the call decide
        signature = None
    if signature is not None:
        missing = [p.name for p in signature.parameters.values()
                   if p.default is p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                   and p.name not in kwargs]  # fmt: skip
        if missing:
            raise ValueError(f"model {name!r} requires {', '.join(missing)}: set "
                             + ", ".join(f"model_kwargs.{m}" for m in missing)
                             + f" (--set model_kwargs.{missing[0]}=...)")  # fmt: skip
    model = build(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {name!r} built a {type(model).__name__}, not an nn.Module")
    model.sss_spec = {"name": name, "kwargs": dict(kwargs)}
    return model
