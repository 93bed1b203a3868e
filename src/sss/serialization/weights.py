"""Trained weights from outside sss: a state dict in ``.safetensors``, a ``.pt``/``.pth`` file
read with ``torch.load(weights_only=True)`` (no code runs from it), or a model saved by
:func:`sss.save`, loaded into a model built by the zoo or the user's factory (``--init``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from sss.errors import CheckpointError
from sss.serialization.state import check_digest

#: Keys under which training scripts commonly nest the state dict in a ``.pt`` file.
_NESTED = ("state_dict", "model", "model_state_dict", "net")


def read_state_dict(path: str | os.PathLike, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a weights file, with ``prefix`` (e.g. ``module.``) stripped from each key.

    Raises:
        CheckpointError: The file is missing, unreadable, changed since sss wrote it, or holds
            no mapping of names to tensors.
    """
    path = Path(path)
    if not path.exists() and path.with_suffix(".safetensors").is_file():
        path = path.with_suffix(".safetensors")  # a model saved by sss.save, named without its suffix
    if not path.is_file():
        raise CheckpointError(f"weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  safe_open has no __iter__
            if "sha256" in meta:  # written by sss: check it
                check_digest(state, meta["sha256"], path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"cannot read weights from {path} ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "give a .safetensors state dict, a .pt/.pth state dict, or a model saved by sss"
        ) from e
    for key in _NESTED:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of names to tensors); save one with "
                              "torch.save(model.state_dict(), path)")  # fmt: skip
    if prefix:
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: str | os.PathLike, prefix: str = "") -> None:
    """Loads the weights of ``path`` into ``model`` (unpruned, ungated), in place.

    Raises:
        CheckpointError: One line naming the first missing and unexpected keys, or the first
            shapes that differ, and what to change (a ``prefix`` to strip, another model).
    """
    state = read_state_dict(path, prefix)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]  # fmt: skip
    if missing or unexpected or shapes:
        problems = [f"{len(missing)} missing (first: {missing[:3]})" if missing else "",
                    f"{len(unexpected)} unexpected (first: {unexpected[:3]})" if unexpected else "",
                    f"shapes differ ({'; '.join(shapes[:2])})" if shapes else ""]  # fmt: skip
        heads = {k.split(".", 1)[0] + "." for k in unexpected}
        hint = (
            f"; every unexpected key starts with {next(iter(heads))!r}: strip it with init_prefix"
            if len(heads) == 1 and len(unexpected) == len(state)
            else "; is it the same model and num_classes?"
        )
        raise CheckpointError(f"the weights in {path} do not fit {type(model).__name__}: "
                              + ", ".join(p for p in problems if p) + hint)  # fmt: skip
    model.load_state_dict({**expected, **state}, strict=True)
