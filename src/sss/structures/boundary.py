"""The boundary between sss and the code it runs: an exception that torch or a model's own code
raises while sss works on the model reaches the user as an :class:`~sss.errors.UnsupportedModelError`
naming the module and the reason, never as a raw ``TraceError`` or ``AssertionError`` from deep
inside a library they did not call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from sss.errors import SSSError, UnsupportedModelError

_OWN_CODE = str(Path(__file__).resolve().parents[1])


@contextmanager
def model_errors(model: nn.Module, action: str) -> Iterator[None]:
    """Re-raises what torch or ``model``'s code raises inside the block as an
    :class:`~sss.errors.UnsupportedModelError`: ``action`` (``"gating"``), the innermost module of
    ``model`` that was running and the original error's type and first line. sss's own errors
    (argument checks) and its bugs pass through unchanged."""
    try:
        yield
    except SSSError:
        raise
    except Exception as e:
        raised_in, path, module = _origin(e, model)
        if raised_in.startswith(_OWN_CODE):
            raise
        where = f" in {path or type(model).__name__} ({type(module).__name__})" if module is not None else ""
        exclude = f"exclude it with ignore=[{path!r}] or " if path else ""
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise UnsupportedModelError(
            f"{action} {type(model).__name__} failed{where}: {type(e).__name__}: {first} (raised in "
            f"{Path(raised_in).name}). Check that the model runs on the example input; if it does, sss cannot "
            f"handle this code yet: {exclude}gate fewer kinds (structures=...)"
        ) from e


def _origin(e: BaseException, model: nn.Module) -> tuple[str, str | None, nn.Module | None]:
    """The file the exception was raised in, and the path and module of the innermost module that
    was running. A module of a copy (the exactness check runs copies) is named by its path in
    the outermost module running, which has the model's layout."""
    tb, running, filename = e.__traceback__, [], ""
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and (not running or running[-1] is not owner):
            running.append(owner)
        filename = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    if not running:
        return filename, None, None
    names = {id(m): n for n, m in model.named_modules()}
    inner = running[-1]
    if id(inner) in names:
        return filename, names[id(inner)], inner
    root = running[0]
    inside = {id(m): n for n, m in root.named_modules()}.get(id(inner))
    prefix = names.get(id(root), "" if inside is not None else None)
    if inside is None or prefix is None:
        return filename, None, inner
    path = ".".join(p for p in (prefix, inside) if p).replace(".inner", "")  # a gated layer's wrapper
    return filename, path or None, inner
