"""The prunability sweep's subset in the default suite: models of every zoo and family, as users
build them, gated with every kind, ~30% of the factors zeroed, pruned and compared, saved and
loaded (`benchmarks/prunability.py`, whose check this is). A model is exact, or refused with an
sss error in one line; nothing crashes. Each expectation is pinned, so a model that regresses
fails, and one that starts to prune exactly fails until its expectation is raised."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("timm")
pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from prunability import check_sss
from zoo_models import zoo_models

#: model → the kinds it must have (exact removal) or, for a refusal, the words its reason holds.
EXPECTED: dict[str, set[str] | str] = {
    "timm:test_resnet": {"block", "channel"},
    "timm:resnet18": {"block", "channel"},
    "timm:regnety_002": {"block", "channel"},
    "timm:test_efficientnet": {"channel"},
    "timm:test_efficientnet_gn": {"channel"},
    "timm:test_efficientnet_ln": {"channel"},
    "timm:efficientnet_b0": {"block", "channel"},
    "timm:mobilenetv2_050": {"block", "channel"},
    "timm:mobilenetv3_small_050": {"block", "channel"},
    "timm:mobilenetv4_conv_small": {"block", "channel"},
    "timm:repvgg_a0": {"channel"},
    "timm:lcnet_050": {"channel"},
    "timm:test_convnext": {"channel"},
    "timm:convnext_atto": {"block", "channel"},
    "timm:test_nfnet": {"channel"},
    "timm:test_byobnet": {"block", "channel"},
    "timm:test_vit": {"block", "channel", "head"},
    "timm:test_vit2": {"block", "channel", "head"},
    "timm:test_vit3": {"channel", "head"},
    "timm:test_vit_relpos": {"block", "channel", "head"},
    "timm:deit_tiny_patch16_224": {"block", "channel", "head"},
    "timm:test_mambaout": {"block", "channel"},
    "timm:tiny_vit_5m_224": {"channel", "head"},
    "torchvision:resnet18": {"block", "channel"},
    "torchvision:mobilenet_v3_small": {"block", "channel"},
    "torchvision:squeezenet1_1": {"channel"},
    "torchvision:mnasnet0_5": {"block", "channel"},
    "torchvision:shufflenet_v2_x0_5": {"channel"},
    "torchvision:swin_s": {"block", "head"},
    "timm:nf_resnet26": {"block"},
    "hf:vit": {"block", "channel", "head"},
    "hf:deit": {"block", "channel", "head"},
    "hf:bert": {"block", "channel", "head"},
    "hf:llama": {"block", "channel", "head"},
    "hf:qwen2": {"block", "channel", "head"},
    "hf:resnet": {"block", "channel"},
    "hf:swin": {"block", "channel", "head"},
    "hf:gpt2": {"block", "channel", "head"},
}

_SPECS = {spec.key: spec for spec in zoo_models()}


@pytest.mark.parametrize("key", list(EXPECTED))
def test_a_zoo_model_prunes_exactly_or_is_refused_in_one_line(key):
    rec = check_sss(_SPECS[key])
    assert rec["status"] != "crash", f"{key} crashed at {rec.get('stage')}: {rec.get('reason')} ({rec.get('where')})"
    expected = EXPECTED[key]
    if isinstance(expected, str):
        assert rec["status"] == "refused" and expected in rec["reason"] and "\n" not in rec["reason"]
        return
    assert rec["status"] == "exact", f"{key}: {rec}"
    assert set(rec["kinds"]) >= expected, f"{key} gated {rec['kinds']}, expected at least {sorted(expected)}"
    assert rec["save_load"] and rec["macs_after"] < rec["macs"]
