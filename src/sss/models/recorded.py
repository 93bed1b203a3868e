"""Building the model a file names (a saved model's ``model`` entry): a file never chooses code.

A saved model records how it was built, ``{"name": ..., "kwargs": {...}}``. A zoo name is
looked up in the registry; its keywords are checked against the builder's signature and type
hints, and the model is first built on the ``meta`` device (no memory) so that a file asking
for a billion classes is refused before anything is allocated. An import path
(``pkg.module:factory``) is the user's code: importing and calling it runs whatever it names
(``os:system``, ``shutil:rmtree``), so it is built only when the caller trusts that name, in
the spirit of Hugging Face's ``trust_remote_code``.
"""

from __future__ import annotations

import inspect
import itertools
import os
import typing
from collections.abc import Collection

import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn

from sss.errors import UntrustedCodeError
from sss.models.registry import _BUILDERS, create, list_models

#: What a caller trusts: every factory (``True``), none (``False``), or these ``pkg.module:factory`` names.
TrustCode = bool | Collection[str]

#: JSON values a builder keyword may hold in a file.
_PLAIN = (bool, int, float, str, type(None))


def is_trusted(name: str, trust_code: TrustCode) -> bool:
    """Whether ``name`` may be imported and called: a zoo name always, an import path only if trusted."""
    if ":" not in name:
        return True
    return trust_code is True or (not isinstance(trust_code, bool) and name in trust_code)


def create_recorded(spec: object, *, trust_code: TrustCode = False, source: str = "the file") -> nn.Module:
    """Builds the model ``spec`` (as :func:`sss.models.create` recorded it) describes.

    Args:
        spec: ``{"name": str, "kwargs": dict}`` read from a file.
        trust_code: Import paths that may be built (``True``: any).
        source: The file, for messages.

    Raises:
        UntrustedCodeError: ``spec`` names an import path the caller does not trust.
        ValueError: ``spec`` is malformed, names an unknown model, a keyword the builder does
            not take or of the wrong type, or a model larger than this machine's free memory.
    """
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("kwargs"), dict)):
        raise ValueError(f"{source} records its model as {str(spec)[:80]!r}, not {{'name': str, 'kwargs': dict}}")
    name, kwargs = spec["name"], spec["kwargs"]
    bad = [k for k, v in kwargs.items() if not (isinstance(k, str) and _plain(v))]
    if bad:
        raise ValueError(f"{source}: model keywords {bad[:3]} hold values other than numbers, strings and lists")
    if ":" in name:
        if not is_trusted(name, trust_code):
            raise UntrustedCodeError(
                f"{source} names the factory {name!r}, code outside sss's zoo, which sss does not run from a file "
                f"(a file could name any function); if you trust it, pass trust_code=True to sss.load "
                f"(--trust-model-code on the command line), or name it yourself: sss.load(path, base=factory), "
                f"--model {name}"
            )
        return create(name, **kwargs)
    if name not in _BUILDERS:
        raise ValueError(f"{source} names the model {name!r}, which is not in the zoo ({', '.join(list_models())})")
    _check_keywords(name, kwargs, source)
    _check_size(name, kwargs, source)
    return create(name, **kwargs)


def _plain(value: object) -> bool:
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def _check_keywords(name: str, kwargs: dict, source: str) -> None:
    """Each keyword is one the zoo builder takes, of the type its hint declares (strict: no
    float where an int is meant)."""
    build = _BUILDERS[name]
    params = inspect.signature(build).parameters
    hints = typing.get_type_hints(build)
    for key, value in kwargs.items():
        if key not in params:
            raise ValueError(f"{source}: {name} takes no keyword {key!r} (it takes {sorted(params)})")
        if key in hints:
            try:
                TypeAdapter(hints[key]).validate_python(value, strict=True)
            except ValidationError:
                raise ValueError(f"{source}: {name}'s {key} must be {_type_name(hints[key])}, got {value!r}") from None


def _type_name(hint: object) -> str:
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _check_size(name: str, kwargs: dict, source: str) -> None:
    """Builds the model on the meta device (shapes only) and refuses one whose tensors would not
    fit in this machine's available memory."""
    try:
        with torch.device("meta"):
            skeleton = _BUILDERS[name](**kwargs)
    except (ValueError, TypeError, RuntimeError) as e:
        raise ValueError(f"{source}: {name} cannot be built with {kwargs} ({type(e).__name__}: {e})") from None
    need = sum(t.numel() * t.element_size() for t in itertools.chain(skeleton.parameters(), skeleton.buffers()))
    free = _available_memory()
    if free is not None and need > free:
        raise ValueError(f"{source}: {name} with {kwargs} needs {need / 2**30:.1f} GiB for its weights, more than the "
                         f"{free / 2**30:.1f} GiB free here; the file's model keywords are wrong")  # fmt: skip


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), else ``None``."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
