"""Module paths: which ones lie under others (for ``ignore=[...]`` and nested structures)."""

from __future__ import annotations

from collections.abc import Sequence


def under(path: str, prefixes: Sequence[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or a submodule of one (``"a.b"`` is under ``"a"``)."""
    return any(path == p or path.startswith(p + ".") for p in prefixes)
