"""Shared fixtures: deterministic seeds, small synthetic datasets, randomised gated models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sss.data import ArrayDataset


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def synthetic_dataset(n: int = 256, shape=(1, 12, 12), classes: int = 4, seed: int = 0) -> ArrayDataset:
    """Images whose label is readable from the pixels (the mean brightness of a quadrant)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 80, (n, *shape), dtype=np.uint8)
    h, w = shape[1] // 2, shape[2] // 2
    for i, y in enumerate(labels):
        r, c = divmod(int(y), 2)
        images[i, :, r * h : (r + 1) * h, c * w : (c + 1) * w] += 150
    return ArrayDataset(images, labels.astype(np.int64), mean=(0.4,) * shape[0], std=(0.3,) * shape[0])


@torch.no_grad()
def randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Random BN statistics and affines (β ≠ 0 in particular), so equality tests are not trivial."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.uniform_(-0.3, 0.3, generator=gen)


def randomise(model: nn.Module, zero_prob: float = 0.5, seed: int = 0) -> nn.Module:
    """Random BN statistics/affines and a random block-gate pattern."""
    gen = torch.Generator().manual_seed(seed)
    randomise_batchnorm(model, gen)
    with torch.no_grad():
        for m in model.modules():
            if type(m).__name__ == "Gate":
                keep = torch.rand(m.weight.shape, generator=gen) >= zero_prob
                m.weight.copy_(keep * torch.empty(m.weight.shape).uniform_(0.2, 2.0, generator=gen))
    return model.eval()


def forge_spec(path: Path, spec_changes: dict) -> None:
    """Edits a saved model's JSON as an attacker (or an old version) would, and recomputes its
    digest so that the integrity check passes (an unkeyed digest proves nothing about who wrote
    the file)."""
    from sss.serialization.model_io import _spec_digest

    spec = json.loads(path.with_suffix(".json").read_text())
    spec.update(spec_changes)
    path.with_suffix(".json").write_text(json.dumps(spec))
    weights = path.with_suffix(".safetensors")
    tensors = load_file(str(weights))
    save_file(tensors, str(weights), metadata={"format": spec["format"], "sha256": spec["weights_sha256"],
                                                "spec_sha256": _spec_digest(spec)})  # fmt: skip
