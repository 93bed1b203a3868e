"""In-memory datasets, tensor-level augmentation and batching.

Whole datasets of this size (≤ 60k small images) fit in memory as uint8; batching them
directly is several times faster than a ``DataLoader`` over per-sample transforms on a
2-core machine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sss.data.image_folder import ImageFolder


@dataclass
class ArrayDataset:
    """Images (uint8, N×C×H×W), labels (int64, N) and the normalisation to apply."""

    images: np.ndarray
    labels: np.ndarray
    mean: Sequence[float]
    std: Sequence[float]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: np.ndarray) -> ArrayDataset:
        return ArrayDataset(self.images[index], self.labels[index], self.mean, self.std)


def split_validation(data: ArrayDataset, val_size: int, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """Carves a stratified-by-chance validation set of ``val_size`` from a training set."""
    if not 0 < val_size < len(data):
        raise ValueError(f"val_size must be in (0, {len(data)}), got {val_size}")
    order = np.random.default_rng(seed).permutation(len(data))
    return data.subset(np.sort(order[val_size:])), data.subset(np.sort(order[:val_size]))


def pad_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` pixels, and random horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    batch = torch.arange(n)[:, None, None, None]
    chans = torch.arange(x.shape[1])[None, :, None, None]
    out = padded[batch, chans, rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def iterate_batches(
    data: ArrayDataset | ImageFolder,
    batch_size: int,
    *,
    shuffle: bool,
    augment_pad: int = 0,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    shard: tuple[int, int] = (0, 1),
    workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields normalised float batches ``(x, y)``; shuffles and augments with ``generator``.

    ``shard=(rank, world)`` yields rank's share of each global batch of ``batch_size``, the
    same rows a one-process run would put there. In-memory datasets pad-crop-flip by
    ``augment_pad`` pixels; an :class:`ImageFolder` takes ``augment_pad > 0`` to mean its
    training pipeline (random-resized-crop + flip) and decodes in ``workers`` processes.
    """
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    rank, world = shard
    if isinstance(data, ImageFolder):
        seeds = torch.randint(2**62, (n,), generator=generator).tolist() if augment_pad else [None] * n
        plan = [[(int(i), seeds[int(i)]) for i in order[start : start + batch_size].chunk(world)[rank]]
                for start in range(0, stop, batch_size)]  # fmt: skip
        yield from data.batches(plan, workers)
        return
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        x = images[idx].float().div_(255.0)
        if augment_pad:  # the global batch's augmentation, then this rank's rows of it
            x = pad_crop_flip(x, augment_pad, generator or torch.default_generator)
        yield ((x - mean) / std).chunk(world)[rank], labels[idx].chunk(world)[rank]
