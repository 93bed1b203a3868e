"""Every registered zoo model with every structure kind it has: compact == gated, fewer MACs."""

import pytest
import torch

import sss

from .helpers import assert_exact_and_smaller, random_gated

# Narrow variants keep the test fast; the structure is the same as the full model's.
SMALL = {
    "resnext29": {"cardinality": 4, "base_width": 2, "widen": 1},
    "vgg16_bn": {"width": 0.25},
    "densenet40": {"depth": 10, "growth": 4},
    "googlenet": {"width": 0.125},
    **{f"resnet{d}": {"width": 8} for d in (20, 32, 56, 110)},
    "vit_tiny": {"img_size": 28},
}


def _kinds(name: str) -> tuple[str, ...]:
    if name.startswith("vit"):
        return ("block", "head", "channel")
    if name == "resnext29":
        return ("block", "group", "channel")
    return ("block", "channel") if "resnet" in name else ("channel",)


@pytest.mark.parametrize("name", sss.models.list_models())
def test_zoo_model_all_kinds(name):
    model = sss.models.create(name, in_channels=1, **SMALL.get(name, {}))
    x = torch.randn(2, 1, 28, 28)
    gated = random_gated(model, x, _kinds(name), seed=11)
    assert {g.kind for g in sss.gates(gated)} == set(_kinds(name))
    assert_exact_and_smaller(gated, x)
