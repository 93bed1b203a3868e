"""Image folders in ImageNet's layout (``root/<class>/<image>``), decoded by DataLoader workers.

The standard ImageNet pipeline, written with Pillow because torchvision's wheel cannot be
installed beside every torch build this package supports: random-resized-crop (scale 0.08-1,
ratio 3/4-4/3) and a horizontal flip for training; resize the short side to 256 and crop the
centre 224 for evaluation; ImageNet mean/std. The random choices of each image come from a
seed drawn from the epoch's generator, so an epoch is the same on resume and on any number of
workers. An image that cannot be decoded is named: it fails the run (default) or, with
``on_bad_image="skip"``, is left out with a warning, its label with it.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from sss.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def random_resized_crop(img: Image.Image, size: int, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """A random crop of ``scale`` of the area and ``ratio`` aspect, resized to ``size``²."""
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return img.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    cw, ch = (w, round(w / ratio[0])) if w / h < ratio[0] else (round(h * ratio[1]), h) if w / h > ratio[1] else (w, h)
    x, y = (w - cw) // 2, (h - ch) // 2  # fallback: a centre crop of the closest allowed aspect
    return img.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))


def resize_center_crop(img: Image.Image, resize: int, size: int) -> Image.Image:
    """Short side to ``resize``, then the centre ``size``² (the evaluation transform)."""
    w, h = img.size
    s = resize / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
    x, y = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return img.crop((x, y, x + size, y + size))


@dataclass
class ImageFolder:
    """The images of ``root/<class>/*``, labelled by sorted class-folder name."""

    root: Path
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    image_size: int = 224
    resize: int = 256
    on_bad_image: str = "fail"
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    _loaders: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def scan(cls, root: str | Path, classes: list[str] | None = None, **options) -> ImageFolder:
        """Lists ``root``'s images; ``classes`` (the training split's) fixes the label numbering."""
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder {root} not found (expected {root}/<class>/<image>)")
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        classes = classes or found
        if found != classes:
            unknown, absent = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
            raise DataError(
                f"{root} has class folders {unknown[:5]} that the training split does not have and lacks "
                f"{absent[:5]} (names are case-sensitive); every split needs the same class folders"
            )
        paths, labels, empty = [], [], []
        for label, name in enumerate(classes):
            files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in EXTENSIONS)
            paths += files
            labels += [label] * len(files)
            if not files:
                empty.append(name)
        if empty and paths:
            raise DataError(
                f"class folder(s) {empty[:5]} of {root} hold no images ({', '.join(EXTENSIONS)}): an empty "
                "class would be a label no image has; remove the folder or add its images"
            )
        if not paths:
            raise DataError(f"no images ({', '.join(EXTENSIONS)}) in the class folders of {root}")
        return cls(root, paths, np.asarray(labels, dtype=np.int64), classes, **options)

    def __len__(self) -> int:
        return len(self.paths)

    def checked(self, threads: int = 32) -> ImageFolder:
        """This folder after reading every image's header (threads, not decodes: seconds for
        ImageNet's validation split, minutes for its training split): an unreadable file fails
        here, before the first training step, or (``on_bad_image="skip"``) is left out."""

        def probe(path: Path) -> str | None:
            try:
                with Image.open(path) as f:
                    f.size  # noqa: B018  (the header is parsed by now)
            except Exception as e:
                return f"{type(e).__name__}: {e}"
            return None

        with ThreadPoolExecutor(threads) as pool:
            problems = list(tqdm(pool.map(probe, self.paths, chunksize=64), total=len(self.paths), leave=False,
                                 desc=f"checking {self.root}", disable=len(self.paths) < 20_000))  # fmt: skip
        bad = [(p, why) for p, why in zip(self.paths, problems, strict=True) if why]
        if not bad:
            return self
        if self.on_bad_image != "skip":
            shown = "; ".join(f"{p} ({why})" for p, why in bad[:3])
            raise DataError(f"{len(bad)} unreadable image(s) in {self.root}: {shown}; fix or remove them, or set "
                            "on_bad_image=skip to leave such images out")  # fmt: skip
        warnings.warn(f"leaving out {len(bad)} unreadable image(s) of {self.root}, e.g. {bad[0][0]}", stacklevel=2)
        return self.subset(np.asarray([i for i, why in enumerate(problems) if not why], dtype=np.int64))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def subset(self, index: np.ndarray) -> ImageFolder:
        return ImageFolder(self.root, [self.paths[i] for i in index], self.labels[index], self.classes,
                           self.image_size, self.resize, self.on_bad_image, self.mean, self.std)  # fmt: skip

    def load(self, i: int, seed: int | None) -> tuple[torch.Tensor, int] | None:
        """Image ``i`` as a uint8 CHW tensor, augmented with ``seed`` (``None``: evaluation)."""
        path = self.paths[i]
        try:
            with Image.open(path) as f:
                img = f.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            if self.on_bad_image == "skip":
                warnings.warn(f"skipping unreadable image {path} ({type(e).__name__}: {e})", stacklevel=2)
                return None
            raise DataError(f"cannot decode {path} ({type(e).__name__}: {e}); fix or remove it, or set "
                            "on_bad_image=skip to leave such images out") from e  # fmt: skip
        if seed is None:
            img = resize_center_crop(img, self.resize, self.image_size)
        else:
            rng = random.Random(seed)
            img = random_resized_crop(img, self.image_size, rng)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1), int(self.labels[i])

    def batches(
        self, plan: list[list[tuple[int, int | None]]], workers: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised batches of the planned ``(index, seed)`` lists, decoded by ``workers``
        persistent DataLoader processes (0: in this process)."""
        key = (workers, plan[0][0][1] is None if plan and plan[0] else True)
        if key not in self._loaders:
            sampler = _Plan()
            loader = torch.utils.data.DataLoader(
                _Decoding(self), batch_sampler=sampler, num_workers=workers, collate_fn=_collate,
                persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
            )  # fmt: skip
            self._loaders[key] = (sampler, loader)
        sampler, loader = self._loaders[key]
        sampler.batches = plan
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        for x, y in loader:
            if len(y):  # a batch whose every image was skipped is no batch
                yield (x.float().div_(255.0) - mean) / std, y


class _Plan(torch.utils.data.Sampler):
    """A batch sampler whose batches are set per epoch (so persistent workers can stay)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int | None]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Decoding(torch.utils.data.Dataset):
    def __init__(self, folder: ImageFolder) -> None:
        self.folder = folder

    def __getitem__(self, item: tuple[int, int | None]):
        return self.folder.load(*item)

    def __len__(self) -> int:
        return len(self.folder)


def _collate(samples: list) -> tuple[torch.Tensor, torch.Tensor]:
    kept = [s for s in samples if s is not None]  # skipped images leave with their labels
    if not kept:
        return torch.empty(0, 3, 1, 1, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    return torch.stack([x for x, _ in kept]), torch.tensor([y for _, y in kept])
