"""Nested training state (state dicts, optimizer state, counters) in one safetensors file.

Tensors go into the safetensors payload; the structure around them (dicts with int keys,
lists, tuples, numbers, strings) goes into a JSON skeleton in the file's metadata. Loading
parses JSON and raw tensors only: no pickle, so no code runs from a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sss.errors import CheckpointError

_FORMAT = "sss-state/2"  # /2: the metadata holds a SHA-256 of the tensors, checked at load
_READABLE = ("sss-state/1", _FORMAT)


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors (names, dtypes, shapes and bytes, in name order): a flipped bit
    anywhere in a file's payload changes it."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_digest(tensors: dict[str, torch.Tensor], expected: str | None, path: Path) -> None:
    """Raises ``CheckpointError`` naming ``path`` if the tensors are not the ones written."""
    if expected is None or tensor_digest(tensors) != expected:
        what = "has no digest of its tensors" if expected is None else "does not match the digest written with it"
        raise CheckpointError(f"{path} is corrupt: its content {what} (a changed byte: a disk or copy error); "
                              "restore it from a copy, or resume from / retrain to an earlier file")  # fmt: skip


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # the parent is a file, or a folder that takes no files (/proc, read-only)
        raise CheckpointError(f"cannot write {path}: {e.strerror or e} ({e.filename or path.parent}); choose a path "
                              "in a writable folder") from None  # fmt: skip
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file what open() would
        os.replace(tmp, path)
    except Exception as e:  # a full disk reaches us as OSError or as safetensors' own error
        Path(tmp).unlink(missing_ok=True)
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        raise CheckpointError(f"cannot write {path} ({type(e).__name__}: {e}); {kept}. Free disk space (or write "
                              "elsewhere), then run again (a training run: with --resume)") from e  # fmt: skip
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _skeleton_tensor(skeleton: str) -> torch.Tensor:
    """The JSON skeleton as bytes, so that the digest covers the numbers stored in it too."""
    return torch.frombuffer(bytearray(skeleton.encode()), dtype=torch.uint8)


def save_state(state: Any, path: str | Path) -> None:
    """Writes nested ``state`` to ``path`` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_encode(state, tensors))
    meta = {"format": _FORMAT, "state": skeleton, "sha256": tensor_digest({**tensors, "": _skeleton_tensor(skeleton)})}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_state(path: str | Path) -> Any:
    """Reads what :func:`save_state` wrote, after checking its digest.

    Raises:
        CheckpointError: The file is missing, truncated, changed since it was written, or not
            an sss state file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  safe_open has no __iter__
        if meta.get("format") not in _READABLE:
            raise ValueError(f"format is {meta.get('format')!r}, expected {_FORMAT!r}")
        if meta["format"] != "sss-state/1":  # files of the first format carry no digest
            check_digest({**tensors, "": _skeleton_tensor(meta["state"])}, meta.get("sha256"), path)
        return _decode(json.loads(meta["state"]), tensors)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a readable sss checkpoint ({e}). It may be truncated or from another "
            "tool; delete it and resume from an earlier checkpoint, or train again."
        ) from e
