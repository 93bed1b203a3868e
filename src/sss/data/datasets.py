"""Named datasets: Fashion-MNIST (the embedded default), MNIST-format folders and CIFAR."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sss.data.cifar import load_cifar
from sss.data.idx import read_idx
from sss.data.image_folder import ImageFolder
from sss.data.loader import ArrayDataset
from sss.errors import DataError

#: Where Debian's ``dataset-fashion-mnist`` package puts the four IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# Per-dataset channel mean/std of the training images in [0, 1].
_STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
#: Every named dataset; ``imagefolder`` reads ``data_dir/train/<class>/*`` and ``data_dir/val/<class>/*``.
DATASETS = (*_STATS, "imagefolder")


def _load_idx_folder(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if train else "t10k"
    images, labels = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    for suffix in (".gz", ""):
        if (root / (images + suffix)).is_file():
            x = read_idx(root / (images + suffix))[:, None]
            y = read_idx(root / (labels + suffix)).astype(np.int64)
            if len(x) != len(y):
                raise DataError(f"{root}: {len(x)} images but {len(y)} labels")
            return x, y
    hint = " (install it with: apt-get install dataset-fashion-mnist)" if str(root) == FASHION_MNIST_DIR else ""
    raise DataError(f"no {images}[.gz] in {root}{hint}")


def load_dataset(
    name: str, train: bool, data_dir: str | Path | None = None, *, image_size: int = 224, on_bad_image: str = "fail"
) -> ArrayDataset | ImageFolder:
    """Loads a split of a named dataset: into memory, or (``imagefolder``) as a list of files.

    Args:
        name: ``"fashion-mnist"``, ``"cifar10"``, ``"cifar100"`` or ``"imagefolder"``.
        train: The training split (else the test split: ``val/`` of an image folder).
        data_dir: Folder with the files; Fashion-MNIST defaults to the Debian package's.
        image_size: Crop size of an image folder (its evaluation resize is 256/224 of it).
        on_bad_image: ``"fail"`` or ``"skip"`` an image folder's undecodable images.
    """
    if name == "imagefolder":
        if data_dir is None:
            raise DataError("imagefolder needs --data-dir: a folder with train/<class>/* and val/<class>/*")
        # Both splits are scanned and their headers read up front (the training split's load is
        # the run's first step): a bad val/ folder fails now, not after the last epoch.
        options = {"image_size": image_size, "resize": round(image_size * 256 / 224), "on_bad_image": on_bad_image}
        train_split = ImageFolder.scan(Path(data_dir) / "train", **options)
        val_split = ImageFolder.scan(Path(data_dir) / "val", train_split.classes, **options).checked()
        return train_split.checked() if train else val_split
    if name not in _STATS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name == "fashion-mnist":
        x, y = _load_idx_folder(Path(data_dir or FASHION_MNIST_DIR), train)
    else:
        if data_dir is None:
            raise DataError(f"{name} needs --data-dir: a folder with the official CIFAR archive extracted")
        x, y = load_cifar(data_dir, name, train)
    mean, std = _STATS[name]
    return ArrayDataset(x, y, mean=mean, std=std)
