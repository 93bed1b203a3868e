"""Local-file loaders (IDX, CIFAR binary and python formats), augmentation, splits."""

import gzip
import pickle

import numpy as np
import pytest
import torch

from sss.data import iterate_batches, load_dataset, split_validation
from sss.data.cifar import load_cifar
from sss.data.idx import read_idx
from sss.data.loader import ArrayDataset, pad_crop_flip
from sss.errors import DataError


def _write_idx(path, array, gz=True):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_roundtrip(tmp_path, gz):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", x, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", y, gz)
    data = load_dataset("fashion-mnist", train=False, data_dir=tmp_path)
    assert data.images.shape == (20, 1, 28, 28) and np.array_equal(data.images[:, 0], x)
    assert np.array_equal(data.labels, y.astype(np.int64))


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    x = np.zeros((4, 3, 3), np.uint8)
    _write_idx(tmp_path / "short", x, gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")
    with pytest.raises(DataError, match="no train-images"):
        load_dataset("fashion-mnist", train=True, data_dir=tmp_path)


def _cifar_arrays(n, classes, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, classes, n)


def test_cifar10_python_format(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    expected = []
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        x, y = _cifar_arrays(6, 10, i)
        expected.append((x, y))
        with open(root / name, "wb") as f:  # the official files are protocol-2 pickles of dicts with bytes keys
            pickle.dump({b"data": x, b"labels": y.tolist(), b"batch_label": b"b"}, f, protocol=2)
    xtr, ytr = load_cifar(tmp_path, "cifar10", train=True)
    assert xtr.shape == (30, 3, 32, 32) and xtr.dtype == np.uint8
    assert np.array_equal(xtr[6:12].reshape(6, -1), expected[1][0]) and np.array_equal(ytr[:6], expected[0][1])
    data = load_dataset("cifar10", train=False, data_dir=root)
    assert len(data) == 6 and data.shape == (3, 32, 32)


def test_cifar100_python_format_uses_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    for name, seed in (("train", 0), ("test", 1)):
        x, y = _cifar_arrays(5, 100, seed)
        with open(root / name, "wb") as f:
            pickle.dump({b"data": x, b"fine_labels": y.tolist(), b"coarse_labels": [0] * 5}, f, protocol=2)
    _, y = load_cifar(tmp_path, "cifar100", train=False)
    assert np.array_equal(y, _cifar_arrays(5, 100, 1)[1])


@pytest.mark.parametrize(("name", "label_bytes"), [("cifar10", 1), ("cifar100", 2)])
def test_cifar_binary_format(tmp_path, name, label_bytes):
    sub = {"cifar10": "cifar-10-batches-bin", "cifar100": "cifar-100-binary"}[name]
    files = {"cifar10": ["test_batch.bin"], "cifar100": ["test.bin"]}[name]
    (tmp_path / sub).mkdir()
    x, y = _cifar_arrays(4, 10, 3)
    labels = np.stack([np.zeros(4, np.uint8)] * (label_bytes - 1) + [y.astype(np.uint8)], 1)
    np.concatenate([labels, x], 1).tofile(tmp_path / sub / files[0])
    xs, ys = load_cifar(tmp_path, name, train=False)
    assert np.array_equal(ys, y) and np.array_equal(xs.reshape(4, -1), x)


def test_cifar_pickle_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (eval, ("1+1",))

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DataError, match=r"refusing to load builtins\.eval"):
        load_cifar(tmp_path, "cifar10", train=False)


def test_cifar_missing_folder_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("cifar10", train=True, data_dir=tmp_path)
    with pytest.raises(DataError, match="needs --data-dir"):
        load_dataset("cifar10", train=True)


def test_pad_crop_flip_is_a_shifted_window():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    out = pad_crop_flip(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for img, src in zip(out, x, strict=True):
        padded = torch.nn.functional.pad(src, (2, 2, 2, 2))
        windows = [padded[:, r : r + 5, c : c + 5] for r in range(5) for c in range(5)]
        assert any(torch.equal(img, w) or torch.equal(img, w.flip(-1)) for w in windows)


def test_batches_deterministic_and_normalised():
    data = ArrayDataset(np.full((10, 1, 4, 4), 255, np.uint8), np.arange(10), mean=(0.5,), std=(0.25,))
    a = [y for _, y in iterate_batches(data, 4, shuffle=True, generator=torch.Generator().manual_seed(1))]
    b = [y for _, y in iterate_batches(data, 4, shuffle=True, generator=torch.Generator().manual_seed(1))]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True)) and [len(y) for y in a] == [4, 4, 2]
    x, _ = next(iterate_batches(data, 4, shuffle=False))
    assert torch.allclose(x, torch.full_like(x, 2.0))


def test_split_validation_is_disjoint():
    data = ArrayDataset(np.zeros((100, 1, 2, 2), np.uint8), np.arange(100), (0.0,), (1.0,))
    train, val = split_validation(data, 20, seed=3)
    assert len(train) == 80 and len(val) == 20
    assert not set(train.labels) & set(val.labels)


def test_fashion_mnist_real_files():
    test = load_dataset("fashion-mnist", train=False)
    assert test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
