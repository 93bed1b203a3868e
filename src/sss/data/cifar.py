"""CIFAR-10/100 from a local folder, in the official binary or python format (no downloads)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from sss.errors import DataError

# The python-format batches are pickles of dicts of numpy arrays. They are read with an
# unpickler that only rebuilds numpy arrays and plain containers, so a tampered file
# cannot run code.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    with path.open("rb") as f:
        try:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        except Exception as e:
            raise DataError(f"{path} is not a CIFAR python batch ({e})") from e
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}


def _python_split(root: Path, name: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        key = "labels"
    else:
        files, key = (["train"] if train else ["test"]), "fine_labels"
    xs, ys = [], []
    for fname in files:
        batch = _load_pickle(root / fname)
        xs.append(np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[key], np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _binary_split(root: Path, name: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    if name == "cifar10":
        files = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
        label_bytes, label_idx = 1, 0
    else:
        files = ["train.bin"] if train else ["test.bin"]
        label_bytes, label_idx = 2, 1  # (coarse, fine): SSS/GAL report the 100 fine classes
    record = label_bytes + 3 * 32 * 32
    xs, ys = [], []
    for fname in files:
        raw = np.fromfile(root / fname, np.uint8)
        if raw.size % record:
            raise DataError(f"{root / fname} has {raw.size} bytes, not a multiple of the {record}-byte record")
        rows = raw.reshape(-1, record)
        ys.append(rows[:, label_idx].astype(np.int64))
        xs.append(rows[:, label_bytes:].reshape(-1, 3, 32, 32))
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar(root: str | Path, name: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Loads a CIFAR split as ``(uint8 N×3×32×32, int64 N)``.

    ``root`` may be the extracted archive folder itself or its parent; the folders
    ``cifar-10-batches-py``, ``cifar-10-batches-bin``, ``cifar-100-python`` and
    ``cifar-100-binary`` are recognised.
    """
    root = Path(root)
    candidates = {
        "cifar10": [("cifar-10-batches-py", _python_split), ("cifar-10-batches-bin", _binary_split)],
        "cifar100": [("cifar-100-python", _python_split), ("cifar-100-binary", _binary_split)],
    }[name]
    probe = {"cifar10": ("test_batch", "test_batch.bin"), "cifar100": ("test", "test.bin")}[name]
    for sub, reader in candidates:
        for folder in (root / sub, root):
            marker = probe[0] if reader is _python_split else probe[1]
            if (folder / marker).is_file():
                try:
                    return reader(folder, name, train)
                except FileNotFoundError as e:
                    raise DataError(f"{name} folder {folder} is incomplete: {e.filename} is missing") from e
    raise DataError(
        f"no {name} data under {root}: expected the extracted official archive "
        f"({candidates[0][0]}/ or {candidates[1][0]}/); pass its folder with --data-dir"
    )
