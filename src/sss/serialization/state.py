"""Nested training state (state dicts, optimizer state, counters) in one safetensors file.

Tensors go into the safetensors payload; the structure around them (dicts with int keys,
lists, tuples, numbers, strings) goes into a JSON skeleton in the file's metadata. Loading
parses JSON and raw tensors only: no pickle, so no code runs from a checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sss.errors import CheckpointError

_FORMAT = "sss-state/1"


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint; use tensors, numbers, str, dict, list")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    return obj


def atomic_write(path: Path, write) -> None:
    """Calls ``write(tmp_path)`` then renames the temp file over ``path``: a crash mid-write
    leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file what open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_state(state: Any, path: str | Path) -> None:
    """Writes nested ``state`` to ``path`` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_encode(state, tensors))
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata={"format": _FORMAT, "state": skeleton}))


def load_state(path: str | Path) -> Any:
    """Reads what :func:`save_state` wrote.

    Raises:
        CheckpointError: The file is missing, truncated, or not an sss state file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  safe_open has no __iter__
        if meta.get("format") != _FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, expected {_FORMAT!r}")
        return _decode(json.loads(meta["state"]), tensors)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a readable sss checkpoint ({e}). It may be truncated or from another "
            "tool; delete it and resume from an earlier checkpoint, or train again."
        ) from e
