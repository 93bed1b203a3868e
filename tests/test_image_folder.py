"""Image folders (ImageNet's layout) from real Fashion-MNIST images written as PNG and JPEG:
labels, the ImageNet pipeline, worker-count independence, sharding, and unreadable images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import sss
from sss.data import ImageFolder, iterate_batches, load_dataset
from sss.train import TrainConfig, Trainer

CLASSES = ["ankle_boot", "bag", "coat"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/<class>/*.png and val/<class>/*.jpg, 40x36 RGB upscales of Fashion-MNIST test images."""
    root = tmp_path_factory.mktemp("imagenet_like")
    fm = load_dataset("fashion-mnist", train=False)
    wanted = {"ankle_boot": 9, "bag": 8, "coat": 4}  # Fashion-MNIST label of each class
    for split, ext, count in (("train", "png", 12), ("val", "jpg", 4)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            idx = np.flatnonzero(fm.labels == wanted[name])[:count] + (0 if split == "train" else 100)
            for k, i in enumerate(idx):
                img = Image.fromarray(fm.images[i, 0]).convert("RGB").resize((40, 36))
                img.save(root / split / name / f"{k}.{ext}")
    return root


def test_labels_follow_sorted_class_folders(folder):
    train = load_dataset("imagefolder", True, folder, image_size=32)
    val = load_dataset("imagefolder", False, folder, image_size=32)
    assert train.classes == val.classes == CLASSES and len(train) == 36 and len(val) == 12
    assert all(train.labels[i] == CLASSES.index(p.parent.name) for i, p in enumerate(train.paths))
    assert train.shape == (3, 32, 32) and train.num_classes == 3


def test_pipeline_is_seeded_and_independent_of_worker_count(folder):
    data = load_dataset("imagefolder", True, folder, image_size=32)
    runs = []
    for workers in (0, 2, 0):
        gen = torch.Generator().manual_seed(7)
        runs.append(list(iterate_batches(data, 8, shuffle=True, augment_pad=1, generator=gen, workers=workers)))
    for other in runs[1:]:
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(runs[0], other, strict=True))
    x, _ = runs[0][0]
    assert x.shape == (8, 3, 32, 32) and abs(float(x.mean())) < 3
    evaluation = next(iterate_batches(data, 4, shuffle=False))[0]
    assert torch.equal(evaluation, next(iterate_batches(data, 4, shuffle=False))[0])  # centre crop: no randomness


def test_ranks_get_their_share_of_each_global_batch(folder):
    data = load_dataset("imagefolder", True, folder, image_size=32)
    whole = list(iterate_batches(data, 8, shuffle=True, augment_pad=1, generator=torch.Generator().manual_seed(3)))
    shares = [list(iterate_batches(data, 8, shuffle=True, augment_pad=1, generator=torch.Generator().manual_seed(3),
                                   shard=(r, 2))) for r in range(2)]  # fmt: skip
    for k, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([shares[0][k][0], shares[1][k][0]]), x)
        assert torch.equal(torch.cat([shares[0][k][1], shares[1][k][1]]), y)


def test_an_unreadable_image_is_named_and_fails_or_is_skipped_with_its_label(folder, tmp_path):
    data = load_dataset("imagefolder", True, folder, image_size=32)
    bad = tmp_path / "bag" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG not really")
    paths = [*data.paths[:3], bad, *data.paths[-2:]]
    labels = np.array([*data.labels[:3], 1, *data.labels[-2:]])
    broken = dataclasses.replace(data, paths=paths, labels=labels, _loaders={})
    with pytest.raises(sss.DataError, match=r"cannot decode .*broken\.png.*on_bad_image=skip"):
        list(iterate_batches(broken, 6, shuffle=False))
    skipping = dataclasses.replace(broken, on_bad_image="skip", _loaders={})
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*broken\.png"):
        ((_, y),) = list(iterate_batches(skipping, 6, shuffle=False))
    assert y.tolist() == [*data.labels[:3].tolist(), *data.labels[-2:].tolist()]  # the label left with the image


def test_training_on_an_image_folder(folder, tmp_path):
    cfg = TrainConfig(model="resnet20", model_kwargs={"width": 4}, dataset="imagefolder", data_dir=str(folder),
                      image_size=32, val_size=6, epochs=1, batch_size=10, lr=0.05, gamma=0.05, workers=1,
                      out_dir=str(tmp_path / "run"), channels_last=False)  # fmt: skip
    result = Trainer(cfg, log=lambda m: None, progress=False).fit()
    assert isinstance(result.model, torch.nn.Module) and len(result.history) == 1
    assert ImageFolder is type(load_dataset("imagefolder", False, folder))
