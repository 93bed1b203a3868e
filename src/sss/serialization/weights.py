"""Trained weights from outside sss: a state dict in ``.safetensors``, a ``.pt``/``.pth`` file
read with ``torch.load(weights_only=True)`` (no code runs from it), or a model saved by
:func:`sss.save`, loaded into a model built by the zoo or the user's factory (``--init``)."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from sss.errors import CheckpointError
from sss.serialization.state import check_digest

#: Keys under which training scripts commonly nest the state dict in a ``.pt`` file.
_NESTED = ("state_dict", "model", "model_state_dict", "net")
#: Suffixes of weight files, listed when ``--init`` names the folder that holds one.
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
#: What ``torch.load`` and ``safe_open`` raise on a truncated or foreign file: torch's unpickler
#: surfaces corrupt bytes as any of these (seen: EOFError, struct.error, IndexError, KeyError).
_READ_ERRORS = (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, struct.error, IndexError,
                KeyError, SafetensorError)  # fmt: skip


def _first_line(e: BaseException) -> str:
    """``e`` as ``Type: first line of its message`` (many torch errors have an empty message)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def _is_safetensors(path: Path) -> bool:
    """Whether ``path`` holds safetensors by its content, whatever its suffix: an 8-byte
    little-endian header length that fits the file, then a JSON header starting with ``{``."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 2 <= size <= path.stat().st_size - 8


def _check_path(path: Path) -> Path:
    """The weights file that ``path`` names, or a :class:`CheckpointError` saying what it is instead."""
    if not path.exists() and path.with_suffix(".safetensors").is_file():
        return path.with_suffix(".safetensors")  # a model saved by sss.save, named without its suffix
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
        if not found:
            raise CheckpointError(f"{path} is a directory with no weights file ({', '.join(_WEIGHT_SUFFIXES)}) "
                                  "in it: give the path of the weights file itself")  # fmt: skip
        more = f" ({len(found)} in all)" if len(found) > 3 else ""
        raise CheckpointError(f"{path} is a directory: give the weights file inside it, e.g. "
                              + ", ".join(str(p) for p in found[:3]) + more)  # fmt: skip
    if not path.is_file():
        raise CheckpointError(f"weights file {path} not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the save or the copy did not finish; save the weights again")
    return path


def read_state_dict(path: str | os.PathLike, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a weights file, with ``prefix`` (e.g. ``module.``) stripped from each key.

    A file holding safetensors is read as such whatever its suffix (e.g. a ``.bin``); any other
    file goes to ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: The file is missing, a directory, empty, unreadable, changed since sss
            wrote it, or holds no mapping of names to tensors (or an empty one).
    """
    path = _check_path(Path(path))
    meta: dict[str, str] = {}
    try:
        if _is_safetensors(path):
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  safe_open has no __iter__
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except _READ_ERRORS as e:
        raise CheckpointError(
            f"cannot read weights from {path} ({_first_line(e)}); "
            "give a .safetensors state dict, a .pt/.pth state dict, or a model saved by sss"
        ) from e
    if "sha256" in meta:  # written by sss: check it
        check_digest(state, meta["sha256"], path)
    for key in _NESTED:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of names to tensors); save one with "
                              "torch.save(model.state_dict(), path)")  # fmt: skip
    if not state:
        raise CheckpointError(f"{path} holds an empty state dict (no tensors); save the trained model's with "
                              "torch.save(model.state_dict(), path)")  # fmt: skip
    if prefix:
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def _category(dtype: torch.dtype) -> str:
    """The kind of number a dtype holds; within one kind a cast (fp16 -> fp32) keeps the values."""
    return "complex" if dtype.is_complex else "floating" if dtype.is_floating_point else "integer"


def _non_finite(t: torch.Tensor) -> bool:
    """Whether ``t`` holds a NaN or an infinity (integer tensors cannot)."""
    return (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())


def load_weights(model: nn.Module, path: str | os.PathLike, prefix: str = "") -> None:
    """Loads the weights of ``path`` into ``model`` (unpruned, ungated), in place.

    Floating tensors of another precision are cast (an fp16 file into an fp32 model).

    Raises:
        CheckpointError: One line naming the first missing and unexpected keys, or the first
            shapes that differ, and what to change (a ``prefix`` to strip, another model); the
            first tensor whose dtype is of another kind than the model's (integer into floating);
            or the first tensors holding NaN/inf.
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
    # load_state_dict casts silently: integer values cast into float parameters are not trained weights.
    kinds = [k for k, v in state.items() if _category(v.dtype) != _category(expected[k].dtype)]
    if kinds:
        k = kinds[0]
        more = f" (and {len(kinds) - 1} more)" if len(kinds) > 1 else ""
        raise CheckpointError(f"the weights in {path} do not fit {type(model).__name__}: {k!r} is {state[k].dtype} "
                              f"in the file but {expected[k].dtype} in the model{more}; give the file saved with "
                              "torch.save(model.state_dict(), path) from the trained model")  # fmt: skip
    # A buffer that is non-finite in the fresh model too (a -inf attention mask) is no sign of divergence.
    bad = [k for k, v in state.items() if _non_finite(v) and not _non_finite(expected[k])]
    if bad:
        more = f" ({len(bad)} tensors)" if len(bad) > 3 else ""
        raise CheckpointError(
            f"the weights in {path} hold NaN/inf in {bad[:3]}{more}: the file was saved from a "
            "diverged run; give the weights of an earlier epoch, or retrain with a lower lr"
        )
    model.load_state_dict({**expected, **state}, strict=True)
